"""EchoNet-Pediatric (Reddy et al., JASE 2023) -> nnU-Net raw Dataset632_EchoNetPediatric (default id 632, name
"EchoNetPediatric"): one 16-frame 224x224 clip per video of the A4C and PSAX views, ED first, LV cavity (1) at the
traced ED and ES frames, every other frame ignore (3). Case ids PED_<FileName stem>_A4C, PED_<FileName stem>_PSAX.

Expected layout (pass pediatric_echo_avi/ or its parent as -i; the nested copy
pediatric_echo_avi/pediatric_echo_avi/ is found too)::

    pediatric_echo_avi/A4C/FileList.csv        FileName,EF,Sex,Age,Weight,Height,Split
                                               (FileName with .avi: {patient}-{accession}-{instance}.avi;
                                               Split = integer fold 0-9, assigned per patient)
    pediatric_echo_avi/A4C/VolumeTracings.csv  FileName,X,Y,Frame (one polygon vertex per row, in order; Frame
                                               0-based, or "No Systolic" / "No Diastolic": such rows are skipped)
    pediatric_echo_avi/A4C/Videos/*.avi        112 x 112, grey replicated to 3 channels (one channel is kept)
    pediatric_echo_avi/PSAX/...                the same three entries

The view comes from the folder (a missing view folder is reported and skipped; neither is an error). The vertices
of one (video, frame) are filled as a polygon (row = y, column = x) on the 112 x 112 grid and nearest-upsampled to
224; the traced frame with the larger area is ED. The clip is round(linspace) over the ED..ES span, reversed when
ES comes first in the file (`"reversed": true`). Videos with fewer than two traced frames are skipped and counted.
LV cavity only: annotated_classes is ["LV_endo"].

Splits: `--split paper` (default, the echo paper's Table 1): folds 0-7 -> train (in 5 patient-level folds), 8 and 9
-> test (imagesTs + labelsTs). `--split official`: folds 0-7 -> train, 8 -> val, 9 -> test, the common convention
for this dataset. The
folds are patient-level (patient = the part of FileName before the first "-"); a patient listed in two folds
(within or across the views) is an error, so a patient's clips never straddle splits.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.echo_toolkit import (SPLIT_MODES, Polygon, add_split_argument,
                                                                convert_traced_video, finish_echo_dataset,
                                                                parse_frame, parse_number, read_csv, report_skipped,
                                                                video_stem)
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, dataset_name, raw_root,
                                                           require_nonempty, run_cases, staged_dataset)

DEFAULT_ID = 632
NAME = "EchoNetPediatric"
VIEWS = ("A4C", "PSAX")
FILE_LIST_COLUMNS = ("FileName", "Split")
TRACING_COLUMNS = ("FileName", "X", "Y", "Frame")
TRAIN_FOLDS, VAL_FOLDS, TEST_FOLDS = tuple(range(8)), (8,), (9,)  # official; paper: 8 and 9 both test
DESCRIPTION = "EchoNet-Pediatric A4C and PSAX echo videos, 16-frame ED->ES clips, LV cavity at ED and ES."
REFERENCE = "Reddy et al., J Am Soc Echocardiogr 36(5):482-489, 2023; https://echonet.github.io/pediatric/"


def fold_split(fold: int, split: str = "paper") -> str:
    official = "train" if fold in TRAIN_FOLDS else "val" if fold in VAL_FOLDS else "test"
    return ("test" if official == "val" else official) if split == "paper" else official


def find_view_folders(source: str) -> Dict[str, str]:
    """{view: folder} for the view folders holding a FileList.csv (the nested layout is searched too)."""
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for root in (source, join(source, "pediatric_echo_avi"), join(source, "pediatric_echo_avi", "pediatric_echo_avi")):
        views = {v: join(root, v) for v in VIEWS if os.path.isfile(join(root, v, "FileList.csv"))}
        if views:
            absent = [v for v in VIEWS if v not in views]
            if absent:
                print(f"{NAME}: no {'/'.join(absent)} folder with a FileList.csv in {root}; converting "
                      f"{'/'.join(views)} only")
            return views
    raise ConversionError(f"{source}: expected A4C/FileList.csv and/or PSAX/FileList.csv (pediatric_echo_avi/)")


def is_missing_phase(frame: str) -> bool:
    """'No Systolic' / 'No Diastolic': the phase was not traced."""
    return frame.lower().startswith("no ")


def vertex_polygons(rows: List[dict], path: str, view: str) -> Dict[str, Dict[int, Polygon]]:
    """{video stem: {frame: (xs, ys)}} from one vertex per row; a frame with fewer than three vertices gives no
    polygon; rows of a missing phase are skipped."""
    vertices: Dict[str, Dict[int, Tuple[list, list]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for row in rows:
        if is_missing_phase(row["Frame"]):
            continue
        stem = video_stem(row["FileName"])
        case = f"PED_{stem}_{view}"
        xs, ys = vertices[stem][parse_frame(row["Frame"], path, row, case)]
        xs.append(parse_number(row["X"], "X", path, row, case))
        ys.append(parse_number(row["Y"], "Y", path, row, case))
    return {stem: {f: p for f, p in frames.items() if len(p[0]) >= 3} for stem, frames in vertices.items()}


def parse_fold(row: dict, path: str, case: str) -> int:
    fold = row["Split"]
    if not fold.isdigit() or int(fold) not in TRAIN_FOLDS + VAL_FOLDS + TEST_FOLDS:
        raise ConversionError(f"case {case}: {path} line {row['_line']}: Split {fold!r} is not a fold number 0-9")
    return int(fold)


def pediatric_jobs(source: str, split: str = "paper") -> list:
    """(video, case, dataset, view, polygons, split) per convertible video; reads only the CSV files."""
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
    jobs, skipped = [], []
    patient_fold: Dict[str, Tuple[int, str]] = {}  # patient -> (fold, the first case that set it)
    for view, folder in find_view_folders(source).items():
        file_list, tracings = join(folder, "FileList.csv"), join(folder, "VolumeTracings.csv")
        files = require_nonempty(read_csv(file_list, FILE_LIST_COLUMNS), f"videos in {file_list}")
        polygons = vertex_polygons(read_csv(tracings, TRACING_COLUMNS), tracings, view)
        listed = set()
        for row in files:
            stem = video_stem(row["FileName"])
            case = f"PED_{stem}_{view}"
            if stem in listed:
                raise ConversionError(f"case {case}: {file_list} lists {row['FileName']} twice")
            listed.add(stem)
            fold, patient = parse_fold(row, file_list, case), stem.split("-")[0]
            first_fold, first_case = patient_fold.setdefault(patient, (fold, case))
            if first_fold != fold:
                raise ConversionError(f"case {case}: patient {patient} is in fold {fold} here and in fold {first_fold} "
                                      f"({first_case}); folds must be patient-level")
            if len(polygons.get(stem, {})) < 2:
                skipped.append(case)
                continue
            jobs.append((join(folder, "Videos", f"{stem}.avi"), case, NAME, view, polygons[stem],
                         fold_split(fold, split)))
        orphans = sorted(set(polygons) - listed)
        if orphans:
            raise ConversionError(f"case PED_{orphans[0]}_{view}: {tracings} traces {orphans[0]}.avi, a video "
                                  f"{file_list} does not list")
    report_skipped(NAME, skipped)
    return require_nonempty(jobs, f"videos with two traced frames in {source}")


def convert_echonet_pediatric(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1,
                              overwrite: bool = False, split: str = "paper") -> str:
    """Convert EchoNet-Pediatric (A4C and PSAX) into Dataset<id>_EchoNetPediatric in nnUNet_raw; returns the dataset
    folder name."""
    jobs = pediatric_jobs(source, split)
    folder_name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        metadata = dict(run_cases(convert_traced_video, [(folder, *job) for job in jobs], num_processes,
                                  f"converting {folder_name}"))
        groups = {job[1]: os.path.basename(job[0]).split("-")[0] for job in jobs}  # case -> patient
        finish_echo_dataset(folder, folder_name, metadata, DESCRIPTION, REFERENCE, split, groups)
    return folder_name


@console_command
def main(argv: Optional[list] = None) -> None:
    parser = converter_parser(f"Convert EchoNet-Pediatric (A4C/ and PSAX/ with FileList.csv, VolumeTracings.csv, "
                              f"Videos/) into 16-frame echo clips (Dataset{DEFAULT_ID}_{NAME}).", DEFAULT_ID,
                              layout=('pediatric_echo_avi/ (or its parent) with A4C/ and PSAX/, each FileList.csv, '
                                      'VolumeTracings.csv, Videos/'))
    add_split_argument(parser)
    args = parser.parse_args(argv)
    name = convert_echonet_pediatric(args.i, args.d, args.np, args.overwrite, args.split)
    print(f"wrote {join(raw_root(), name)}")


if __name__ == "__main__":
    main()
