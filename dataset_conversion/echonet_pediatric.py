"""EchoNet-Pediatric (Reddy et al., JASE 2023) -> nnU-Net raw Dataset632_EchoNetPediatric: one 16-frame 224x224
clip per video of the A4C and PSAX views, ED first, LV cavity (1) at the traced frames, the rest ignore (3).

Expected layout (pass the folder as -i; a nested pediatric_echo_avi/pediatric_echo_avi/ is found too)::

    pediatric_echo_avi/A4C/FileList.csv        FileName,EF,Sex,Age,Weight,Height,Split
                                               (FileName with .avi: {patient}-{accession}-{instance}.avi;
                                               Split = integer fold 0-9, patient-level)
    pediatric_echo_avi/A4C/VolumeTracings.csv  FileName,X,Y,Frame (one polygon vertex per row; Frame may be
                                               "No Systolic" / "No Diastolic": such rows are skipped)
    pediatric_echo_avi/A4C/Videos/*.avi        112 x 112
    pediatric_echo_avi/PSAX/...                same files

The view comes from the folder. The polygon is filled on the 112 x 112 grid and upsampled (nearest); the larger
traced area is ED. Folds 0-7 -> train, 8 -> val, 9 -> test (imagesTs/labelsTs); a patient listed in two folds is
an error. Videos with fewer than two traced frames are skipped and counted. LV cavity only
(annotated_classes = [LV_endo]).
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.dataset_conversion.echo_toolkit import convert_traced_video, finish_echo_dataset, read_csv
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError, converter_parser, raw_root, run_cases, \
    staged_dataset

DEFAULT_ID = 632
NAME = "EchoNetPediatric"
VIEWS = ("A4C", "PSAX")
DESCRIPTION = "EchoNet-Pediatric A4C and PSAX echo videos, 16-frame ED->ES clips, LV cavity at ED and ES."
REFERENCE = "Reddy et al., J Am Soc Echocardiogr 36(5):482-489, 2023; https://echonet.github.io/pediatric/"


def fold_split(fold: int) -> str:
    return "train" if fold <= 7 else "val" if fold == 8 else "test"


def find_view_folders(source: str) -> Dict[str, str]:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for root in (source, join(source, "pediatric_echo_avi"), join(source, "pediatric_echo_avi", "pediatric_echo_avi")):
        views = {v: join(root, v) for v in VIEWS if os.path.isfile(join(root, v, "FileList.csv"))}
        if views:
            return views
    raise ConversionError(f"{source}: expected A4C/FileList.csv and/or PSAX/FileList.csv (pediatric_echo_avi)")


def vertex_traces(rows: List[dict]) -> Dict[str, Dict[int, Tuple[list, list]]]:
    polygons: Dict[str, Dict[int, Tuple[list, list]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for row in rows:
        if not row["Frame"].strip().isdigit():  # "No Systolic" / "No Diastolic"
            continue
        xs, ys = polygons[row["FileName"]][int(row["Frame"])]
        xs.append(float(row["X"]))
        ys.append(float(row["Y"]))
    return {video: {f: p for f, p in frames.items() if len(p[0]) >= 3} for video, frames in polygons.items()}


def convert_echonet_pediatric(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1,
                              overwrite: bool = False) -> str:
    jobs, skipped, patient_folds = [], 0, {}
    for view, folder in find_view_folders(source).items():
        traces = vertex_traces(read_csv(join(folder, "VolumeTracings.csv")))
        files = read_csv(join(folder, "FileList.csv"))
        listed = {row["FileName"] for row in files}
        orphans = sorted(set(traces) - listed)
        if orphans:
            raise ConversionError(f"case {orphans[0]}: {view}/VolumeTracings.csv traces a video FileList.csv does "
                                  f"not list")
        for row in files:
            video, stem = row["FileName"], os.path.splitext(row["FileName"])[0]
            if not str(row["Split"]).strip().isdigit():
                raise ConversionError(f"case {stem}: Split {row['Split']!r} is not a fold number 0-9")
            fold, patient = int(row["Split"]), stem.split("-")[0]
            if patient_folds.setdefault(patient, fold) != fold:
                raise ConversionError(f"case {stem}: patient {patient} is in folds {patient_folds[patient]} and {fold}")
            if len(traces.get(video, {})) < 2:
                skipped += 1
                continue
            jobs.append((join(folder, "Videos", video), f"PED_{stem}_{view}", NAME, view, traces[video],
                         fold_split(fold)))
    if skipped:
        print(f"EchoNet-Pediatric: {skipped} video(s) with fewer than two traced frames skipped")
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        metadata = dict(run_cases(convert_traced_video, [(folder, *j) for j in jobs], num_processes,
                                  "EchoNet-Pediatric"))
        parts = {p: sorted(c for c, m in metadata.items() if m["split"] == p) for p in ("train", "val")}
        finish_echo_dataset(folder, NAME, metadata, [parts], DESCRIPTION, REFERENCE)
    return f"Dataset{int(dataset_id):03d}_{NAME}"


def main(argv: Optional[list] = None) -> None:
    parser = converter_parser("Convert EchoNet-Pediatric (A4C/ and PSAX/ with FileList.csv, VolumeTracings.csv, "
                              f"Videos/) into 16-frame echo clips (Dataset{DEFAULT_ID}_{NAME}).", DEFAULT_ID)
    args = parser.parse_args(argv)
    print(f"wrote {join(raw_root(), convert_echonet_pediatric(args.i, args.d, args.np, args.overwrite))}")


if __name__ == "__main__":
    main()
