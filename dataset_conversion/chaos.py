"""CHAOS (Combined Healthy Abdominal Organ Segmentation, ISBI 2019), MR part -> nnU-Net raw Dataset653_CHAOST1
(T1-DUAL in-phase and opposed-phase, both with the T1 labels) and Dataset654_CHAOST2 (T2-SPIR). Liver, kidneys and
spleen. One dataset per MR sequence so that each has its own channel name (T1 / T2), which Hermes' modality priors
use.

Expected layout (pass the CHAOS folder or Train_Sets as -i)::

    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/InPhase/*.dcm
    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/OutPhase/*.dcm
    Train_Sets/MR/<id>/T1DUAL/Ground/*.png           one PNG per slice
    Train_Sets/MR/<id>/T2SPIR/DICOM_anon/*.dcm
    Train_Sets/MR/<id>/T2SPIR/Ground/*.png

Each series is read with SimpleITK's GDCM series reader (slices sorted by position). The label PNGs are sorted by
name; PNG k belongs to the DICOM file with the k-th smallest InstanceNumber (the order CHAOS numbers both), which is
mapped onto the series' position order - so a series stored head-first or feet-first gets its labels right. A PNG
count that differs from the slice count is an error naming the case. PNG grey values 63 liver, 126 right kidney,
189 left kidney, 252 spleen -> 1..4 (any other value is an error). Case ids chaos_<id>_t1_in, chaos_<id>_t1_out,
chaos_<id>_t2. Folds: 5 patient-grouped folds (all sequences of a subject in one fold; the same assignment in both
datasets).
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (all_or_nothing, check_image, ConversionError,
                                                           converter_parser, finish_dataset, grouped_folds,
                                                           listdir_visible, raw_root, run_cases, staged_dataset,
                                                           task_entry, with_geometry, write_case)

DEFAULT_IDS = {"T1": 653, "T2": 654}
NAMES = {"T1": "CHAOST1", "T2": "CHAOST2"}
LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
PNG_VALUES = {0: 0, 63: 1, 126: 2, 189: 3, 252: 4}
SEQUENCES = {"t1_in": ("T1", ("T1DUAL", "DICOM_anon", "InPhase"), ("T1DUAL", "Ground")),
             "t1_out": ("T1", ("T1DUAL", "DICOM_anon", "OutPhase"), ("T1DUAL", "Ground")),
             "t2": ("T2", ("T2SPIR", "DICOM_anon"), ("T2SPIR", "Ground"))}
REFERENCE = "Kavur et al., Medical Image Analysis 69:101950, 2021; https://chaos.grand-challenge.org"


def read_series(folder: str, case: str) -> Tuple[sitk.Image, List[str]]:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder) if os.path.isdir(folder) else ()
    if not files:
        raise ConversionError(f"case {case}: no DICOM series in {folder}")
    left_out = sorted(set(join(folder, f) for f in listdir_visible(folder) if f.lower().endswith(".dcm")) - set(files))
    if left_out:  # GDCM silently drops unreadable files and files of other series
        raise ConversionError(f"case {case}: {left_out[0]} is not a readable slice of the DICOM series in {folder}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise ConversionError(f"case {case}: cannot read the series in {folder} ({str(e).strip()[-200:]})") from None
    check_image(image, folder, case)
    return image, list(files)


def instance_number(path: str) -> int:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return int(reader.GetMetaData("0020|0013").strip()) if reader.HasMetaDataKey("0020|0013") else 0


def label_volume(ground: str, files: List[str], image: sitk.Image, case: str) -> sitk.Image:
    pngs = [f for f in listdir_visible(ground) if f.lower().endswith(".png")] if os.path.isdir(ground) else []
    if len(pngs) != len(files):
        raise ConversionError(f"case {case}: {len(pngs)} label PNGs in {ground} for {len(files)} DICOM slices")
    by_instance = sorted(range(len(files)), key=lambda i: instance_number(files[i]))
    slices: List[np.ndarray] = [None] * len(files)
    for png, slice_index in zip(pngs, by_instance):
        array = sitk.GetArrayFromImage(sitk.ReadImage(join(ground, png)))
        if array.ndim == 3:  # RGB PNG
            array = array[..., 0]
        bad = sorted(set(np.unique(array).tolist()) - set(PNG_VALUES))
        if bad:
            raise ConversionError(f"case {case}: {join(ground, png)} has grey values {bad} (expected 0/63/126/189/252)")
        slices[slice_index] = np.vectorize(PNG_VALUES.get)(array).astype(np.uint8)
    label = np.stack(slices)
    if label.shape != sitk.GetArrayViewFromImage(image).shape:
        raise ConversionError(f"case {case}: label volume {label.shape} does not match the series "
                              f"{sitk.GetArrayViewFromImage(image).shape}")
    return with_geometry(label, image)


def convert_sequence(folder: str, patient_dir: str, patient: str, sequence: str) -> str:
    case = f"chaos_{patient}_{sequence}"
    _, series_parts, ground_parts = SEQUENCES[sequence]
    image, files = read_series(join(patient_dir, *series_parts), case)
    write_case(folder, case, [image], label_volume(join(patient_dir, *ground_parts), files, image, case))
    return case


def find_patients(source: str) -> List[Tuple[str, str]]:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for root in (join(source, "Train_Sets", "MR"), join(source, "MR"), source):
        if os.path.isdir(root) and any(os.path.isdir(join(root, p, "T1DUAL")) for p in listdir_visible(root)):
            return [(join(root, p), p) for p in listdir_visible(root) if os.path.isdir(join(root, p, "T1DUAL"))]
    raise ConversionError(f"{source}: expected Train_Sets/MR/<id>/T1DUAL and T2SPIR folders")


def convert_chaos(source: str, num_processes: int = 1, overwrite: bool = False,
                  dataset_ids: Dict[str, int] = None) -> List[str]:
    patients = find_patients(source)
    ids = {**DEFAULT_IDS, **(dataset_ids or {})}
    with all_or_nothing():  # T1 and T2 of the same patients: both datasets or none
        written = []
        for modality in ("T1", "T2"):
            sequences = [s for s, spec in SEQUENCES.items() if spec[0] == modality]
            name = NAMES[modality]
            with staged_dataset(ids[modality], name, overwrite) as folder:
                jobs = [(folder, d, p, s) for d, p in patients for s in sequences]
                cases = run_cases(convert_sequence, jobs, num_processes, f"CHAOS {modality}")
                groups = {c: c.split("_")[1] for c in cases}
                description = f"Abdominal {modality} MRI (CHAOS) with liver, kidneys and spleen."
                finish_dataset(folder, f"Dataset{ids[modality]:03d}_{name}", {"0": modality}, LABELS, len(cases),
                               task_entry(name, {"0": modality}, LABELS, description,  # T1 and T2: one structure each
                                          structures={k: f"CHAOS/{k}" for k in LABELS if k != "background"},
                                          sampling_weight=0.5),  # Hermes' sampler weight per case
                               description, REFERENCE,
                               splits=grouped_folds(groups, n_folds=min(5, len(patients))))
            written.append(f"Dataset{ids[modality]:03d}_{name}")
    return written


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert CHAOS MR (T1-DUAL in/out phase, T2-SPIR; DICOM + PNG) into nnU-Net raw "
                              "Dataset653_CHAOST1 and Dataset654_CHAOST2.", DEFAULT_IDS["T1"],
                              layout=('CHAOS_Train_Sets/ with Train_Sets/MR/<id>/{T1DUAL,T2SPIR}/DICOM_anon/ and '
                                      'Ground/*.png'))
    parser.add_argument("-d_t2", type=int, default=DEFAULT_IDS["T2"], help="dataset id of the T2 part (default 654)")
    args = parser.parse_args(argv)
    for folder in convert_chaos(args.i, args.np, args.overwrite, {"T1": args.d, "T2": args.d_t2}):
        print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
