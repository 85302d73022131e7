"""EchoNet-Dynamic (Ouyang et al., Nature 2020) -> nnU-Net raw Dataset631_EchoNetDynamic (default id 631, name
"EchoNetDynamic"): one 16-frame 224x224 A4C clip per video, ED first, LV cavity (1) at the traced ED and ES frames,
every other frame ignore (3). Case ids DYN_<FileName> (FileList's FileName, without extension).

Expected layout (pass the folder as -i)::

    EchoNet-Dynamic/FileList.csv          FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
                                          (FileName without extension; Split TRAIN / VAL / TEST)
    EchoNet-Dynamic/VolumeTracings.csv    FileName,X1,Y1,X2,Y2,Frame (FileName with .avi; Frame 0-based)
    EchoNet-Dynamic/Videos/<FileName>.avi 112 x 112, grey replicated to 3 channels (one channel is kept)

Tracings: per traced frame the first row is the LV long axis and the following rows are chords across the LV; the
LV polygon is X1 of rows 1..n followed by X2 of rows 1..n reversed (Y likewise), vertices rounded, filled
(row = y, column = x) on the 112 x 112 video grid and nearest-upsampled to 224 (every source pixel -> 2 x 2).
The traced frame with the larger area is ED, the smaller ES (the files do not say which is which). The clip is
round(linspace) over the ED..ES span in file order, reversed when ES comes first (`"reversed": true`); spans
shorter than 16 frames repeat frames, so ED and ES may be annotated on more than one output frame. Videos with
fewer than two traced frames are skipped and counted. EchoNet traces the LV cavity only: annotated_classes is
["LV_endo"], and the echo trainer leaves the myocardium (LV_epi) unsupervised for these clips.

Splits: `--split paper` (default, the echo paper's Table 1): TRAIN + VAL (8,753 videos) train, in 5 folds (one video
per patient); TEST (1,277) -> imagesTs + labelsTs. `--split official`: FileList's Split (TRAIN -> train, VAL -> val;
TEST -> imagesTs + labelsTs). A tracing of a video FileList
does not list, a traced frame beyond the video's length, a missing or unreadable video, an unknown Split and a
non-numeric coordinate or frame are errors naming the case.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.echo_toolkit import (SPLIT_MODES, Polygon, add_split_argument,
                                                                convert_traced_video, finish_echo_dataset,
                                                                paper_split, parse_frame, parse_number, read_csv,
                                                                report_skipped, video_stem)
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, dataset_name, raw_root,
                                                           require_nonempty, run_cases, staged_dataset)

DEFAULT_ID = 631
NAME = "EchoNetDynamic"
VIEW = "A4C"
SPLITS = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
FILE_LIST_COLUMNS = ("FileName", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
DESCRIPTION = "EchoNet-Dynamic apical four-chamber echo videos, 16-frame ED->ES clips, LV cavity at ED and ES."
REFERENCE = "Ouyang et al., Nature 580:252-256, 2020; https://echonet.github.io/dynamic/"


def chord_polygons(rows: List[dict], path: str) -> Dict[str, Dict[int, Polygon]]:
    """{video stem: {frame: (xs, ys)}} from VolumeTracings rows (per frame: long axis first, then the chords, in
    file order). A frame with fewer than two chords gives no polygon."""
    grouped: Dict[str, Dict[int, List[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        stem = video_stem(row["FileName"])
        grouped[stem][parse_frame(row["Frame"], path, row, f"DYN_{stem}")].append(row)
    polygons: Dict[str, Dict[int, Polygon]] = {}
    for stem, frames in grouped.items():
        polygons[stem] = {}
        for frame, frame_rows in frames.items():
            chords = frame_rows[1:]  # row 0 is the long axis
            if len(chords) < 2:
                continue
            coords = {k: [parse_number(r[k], k, path, r, f"DYN_{stem}") for r in chords]
                      for k in ("X1", "Y1", "X2", "Y2")}
            polygons[stem][frame] = (coords["X1"] + coords["X2"][::-1], coords["Y1"] + coords["Y2"][::-1])
    return polygons


def dynamic_jobs(source: str, split: str = "paper") -> list:
    """(video, case, dataset, view, polygons, split) per convertible video; reads only the CSV files."""
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    file_list = join(source, "FileList.csv")
    files = require_nonempty(read_csv(file_list, FILE_LIST_COLUMNS), f"videos in {file_list}")
    tracings = join(source, "VolumeTracings.csv")
    polygons = chord_polygons(read_csv(tracings, TRACING_COLUMNS), tracings)
    stems: List[str] = []
    seen = set()
    for row in files:
        stem = video_stem(row["FileName"])
        if stem in seen:
            raise ConversionError(f"case DYN_{stem}: {file_list} lists {row['FileName']} twice")
        if row["Split"].upper() not in SPLITS:
            raise ConversionError(f"case DYN_{stem}: {file_list} line {row['_line']}: Split {row['Split']!r} is not "
                                  f"one of {sorted(SPLITS)}")
        stems.append(stem)
        seen.add(stem)
    orphans = sorted(set(polygons) - seen)
    if orphans:
        raise ConversionError(f"case DYN_{orphans[0]}: {tracings} traces {orphans[0]}.avi, a video {file_list} does "
                              f"not list")
    jobs, skipped = [], []
    for row, stem in zip(files, stems):
        if len(polygons.get(stem, {})) < 2:
            skipped.append(stem)
            continue
        official = SPLITS[row["Split"].upper()]
        jobs.append((join(source, "Videos", f"{stem}.avi"), f"DYN_{stem}", NAME, VIEW, polygons[stem],
                     paper_split(official) if split == "paper" else official))
    report_skipped(NAME, skipped)
    return require_nonempty(jobs, f"videos with two traced frames in {source}")


def convert_echonet_dynamic(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1,
                            overwrite: bool = False, split: str = "paper") -> str:
    """Convert EchoNet-Dynamic into Dataset<id>_EchoNetDynamic in nnUNet_raw; returns the dataset folder name."""
    jobs = dynamic_jobs(source, split)
    folder_name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        metadata = dict(run_cases(convert_traced_video, [(folder, *job) for job in jobs], num_processes,
                                  f"converting {folder_name}"))
        finish_echo_dataset(folder, folder_name, metadata, DESCRIPTION, REFERENCE, split)
    return folder_name


@console_command
def main(argv: Optional[list] = None) -> None:
    parser = converter_parser(f"Convert EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, Videos/) into 16-frame "
                              f"echo clips (Dataset{DEFAULT_ID}_{NAME}).", DEFAULT_ID,
                              layout='EchoNet-Dynamic/ with FileList.csv, VolumeTracings.csv and Videos/<FileName>.avi')
    add_split_argument(parser)
    args = parser.parse_args(argv)
    name = convert_echonet_dynamic(args.i, args.d, args.np, args.overwrite, args.split)
    print(f"wrote {join(raw_root(), name)}")


if __name__ == "__main__":
    main()
