"""EchoNet-Dynamic (Ouyang et al., Nature 2020) -> nnU-Net raw Dataset631_EchoNetDynamic: one 16-frame 224x224
A4C clip per video, ED first, LV cavity (1) at the traced ED and ES frames, everything else ignore (3).

Expected layout (pass the folder as -i)::

    EchoNet-Dynamic/FileList.csv          FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
                                          (FileName without extension; Split TRAIN / VAL / TEST)
    EchoNet-Dynamic/VolumeTracings.csv    FileName,X1,Y1,X2,Y2,Frame (FileName with .avi; Frame 0-based)
    EchoNet-Dynamic/Videos/<FileName>.avi 112 x 112, grey replicated to 3 channels

Per traced frame the first row is the LV long axis and the following rows are chords; the LV polygon is X1 of
rows 1..n followed by X2 of rows n..1 (Y likewise), filled on the 112 x 112 grid and upsampled (nearest) to 224.
The larger traced area is ED. Clips span ED..ES (reversed when ES comes first in the file; duplicated frames when
the span is shorter than 16). Videos with fewer than two traced frames are skipped and counted. EchoNet labels the
LV cavity only: the myocardium is marked as not annotated (annotated_classes = [LV_endo]). Splits: FileList's
Split (TRAIN -> train, VAL -> val, TEST -> imagesTs/labelsTs).
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.dataset_conversion.echo_toolkit import convert_traced_video, finish_echo_dataset, read_csv
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError, converter_parser, raw_root, run_cases, \
    staged_dataset

DEFAULT_ID = 631
NAME = "EchoNetDynamic"
SPLITS = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
DESCRIPTION = "EchoNet-Dynamic apical four-chamber echo videos, 16-frame ED->ES clips, LV cavity at ED and ES."
REFERENCE = "Ouyang et al., Nature 580:252-256, 2020; https://echonet.github.io/dynamic/"


def chord_traces(rows: List[dict]) -> Dict[str, Dict[int, Tuple[list, list]]]:
    """{video file: {frame: (xs, ys)}} from VolumeTracings rows (long axis first, then chords)."""
    grouped: Dict[str, Dict[int, List[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["FileName"]][int(row["Frame"])].append(row)
    traces = {}
    for video, frames in grouped.items():
        traces[video] = {}
        for frame, chords in frames.items():
            chords = chords[1:]  # row 0 is the long axis
            if len(chords) < 2:
                continue
            xs = [float(r["X1"]) for r in chords] + [float(r["X2"]) for r in chords][::-1]
            ys = [float(r["Y1"]) for r in chords] + [float(r["Y2"]) for r in chords][::-1]
            traces[video][frame] = (xs, ys)
    return traces


def convert_echonet_dynamic(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1,
                            overwrite: bool = False) -> str:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    files = read_csv(join(source, "FileList.csv"))
    traces = chord_traces(read_csv(join(source, "VolumeTracings.csv")))
    listed = {f"{row['FileName']}.avi" for row in files}
    orphans = sorted(set(traces) - listed)
    if orphans:
        raise ConversionError(f"case {orphans[0]}: VolumeTracings.csv traces a video that FileList.csv does not list")
    jobs, skipped = [], 0
    for row in files:
        video = f"{row['FileName']}.avi"
        if len(traces.get(video, {})) < 2:
            skipped += 1
            continue
        if row["Split"].upper() not in SPLITS:
            raise ConversionError(f"case {row['FileName']}: unknown Split {row['Split']!r}")
        jobs.append((join(source, "Videos", video), f"DYN_{row['FileName']}", NAME, "A4C", traces[video],
                     SPLITS[row["Split"].upper()]))
    if skipped:
        print(f"EchoNet-Dynamic: {skipped} video(s) with fewer than two traced frames skipped")
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        metadata = dict(run_cases(convert_traced_video, [(folder, *j) for j in jobs], num_processes, "EchoNet-Dynamic"))
        parts = {p: sorted(c for c, m in metadata.items() if m["split"] == p) for p in ("train", "val")}
        finish_echo_dataset(folder, NAME, metadata, [parts], DESCRIPTION, REFERENCE)
    return f"Dataset{int(dataset_id):03d}_{NAME}"


def main(argv: Optional[list] = None) -> None:
    parser = converter_parser("Convert EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, Videos/) into 16-frame "
                              f"echo clips (Dataset{DEFAULT_ID}_{NAME}).", DEFAULT_ID)
    args = parser.parse_args(argv)
    print(f"wrote {join(raw_root(), convert_echonet_dynamic(args.i, args.d, args.np, args.overwrite))}")


if __name__ == "__main__":
    main()
