"""M&Ms-1 (Multi-Centre, Multi-Vendor & Multi-Disease Cardiac Image Segmentation, Campello et al., IEEE TMI 2021)
-> nnU-Net raw Dataset655_MnMs: the ED and ES frames of every short-axis cine as 3D cases.

Expected layout (pass OpenDataset or its parent as -i)::

    OpenDataset/Training/Labeled/<code>/<code>_sa.nii.gz      4D cine (H x W x slices x time in NIfTI order)
    OpenDataset/Training/Labeled/<code>/<code>_sa_gt.nii.gz   labels at ED and ES only
    OpenDataset/Validation/<code>/...   OpenDataset/Testing/<code>/...
    OpenDataset/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv   (columns incl. External code, ED, ES,
                                                                             Vendor; frames 0-based)

Labels: 1 LV blood pool, 2 LV myocardium, 3 right ventricle. Channel "cineMRI". Case ids mnms_<code>_ed and
mnms_<code>_es. Training/Labeled -> imagesTr (5 patient-grouped folds: ED and ES of a patient stay together);
Validation and Testing -> imagesTs/labelsTs. The ED/ES label frame must not be empty (error naming the case).
Files that ITK refuses because their direction cosines are not orthonormal (present in the released Validation and
Testing data) are skipped and listed; nothing else is skipped.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, finish_dataset,
                                                           grouped_folds, listdir_visible, raw_root, read_image,
                                                           run_cases, staged_dataset, task_entry)

DEFAULT_ID = 655
NAME = "MnMs"
LABELS = {"background": 0, "lv_blood_pool": 1, "lv_myocardium": 2, "right_ventricle": 3}
CSV_NAME = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
PARTS = {"Training/Labeled": False, "Validation": True, "Testing": True}
DESCRIPTION = "Short-axis cine cardiac MRI (M&Ms-1) at ED and ES: LV blood pool, LV myocardium, right ventricle."
REFERENCE = "Campello et al., IEEE TMI 40(12):3543-3554, 2021; https://www.ub.edu/mnms/"


class NonOrthonormal(Exception):
    pass


def read_4d(path: str, case: str) -> sitk.Image:
    try:
        image = read_image(path, case)
    except ConversionError as e:
        if "orthonormal" in str(e):  # refused by ITK's NIfTI reader or by read_image: skipped and listed
            raise NonOrthonormal(path) from None
        raise
    if image.GetDimension() != 4:
        raise ConversionError(f"case {case}: {path} is not a 4D cine")
    return image


def frame_3d(image: sitk.Image, t: int, case: str) -> sitk.Image:
    size = list(image.GetSize())
    if not 0 <= t < size[3]:
        raise ConversionError(f"case {case}: frame {t} outside the cine's {size[3]} frames")
    return sitk.Extract(image, size[:3] + [0], [0, 0, 0, t])


def convert_patient(folder: str, patient_dir: str, code: str, ed: int, es: int, test: bool) -> Optional[List[str]]:
    case = f"mnms_{code}"
    try:
        cine = read_4d(join(patient_dir, f"{code}_sa.nii.gz"), case)
        gt = read_4d(join(patient_dir, f"{code}_sa_gt.nii.gz"), case)
    except NonOrthonormal:
        return None
    written = []
    for phase, t in (("ed", ed), ("es", es)):
        image, label = frame_3d(cine, t, f"{case}_{phase}"), frame_3d(gt, t, f"{case}_{phase}")
        array = sitk.GetArrayFromImage(label)
        if not array.any():
            raise ConversionError(f"case {case}_{phase}: the label at frame {t} ({phase.upper()}) is empty")
        bad = sorted(set(np.unique(array).tolist()) - {0, 1, 2, 3})
        if bad:
            raise ConversionError(f"case {case}_{phase}: label values {bad} (expected 0-3)")
        images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        os.makedirs(join(folder, labels), exist_ok=True)
        sitk.WriteImage(image, join(folder, images, f"{case}_{phase}_0000.nii.gz"), True)
        sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), join(folder, labels, f"{case}_{phase}.nii.gz"), True)
        written.append(f"{case}_{phase}")
    return written


def read_phases(root: str) -> Dict[str, Tuple[int, int]]:
    path = join(root, CSV_NAME)
    if not os.path.isfile(path):
        raise ConversionError(f"{path} is missing (ED/ES frame numbers)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["External code"]: (int(float(r["ED"])), int(float(r["ES"]))) for r in rows}


def convert_mnms(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False) -> str:
    root = next((f for f in (source, join(source, "OpenDataset")) if os.path.isdir(join(f, "Training", "Labeled"))),
                None)
    if root is None:
        raise ConversionError(f"{source}: expected OpenDataset/Training/Labeled/<code>/<code>_sa.nii.gz")
    phases = read_phases(root)
    jobs = []
    for part, test in PARTS.items():
        part_dir = join(root, part)
        if not os.path.isdir(part_dir):
            continue
        for code in listdir_visible(part_dir):
            if code not in phases:
                raise ConversionError(f"case mnms_{code}: no ED/ES row in {CSV_NAME}")
            jobs.append((join(part_dir, code), code, *phases[code], test))
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        results = run_cases(convert_patient, [(folder, *j) for j in jobs], num_processes, "M&Ms")
        skipped = [f"mnms_{j[1]}" for j, r in zip(jobs, results) if r is None]
        if skipped:
            print(f"M&Ms: {len(skipped)} cine(s) with non-orthonormal direction cosines skipped: {skipped}")
        train_cases = [c for j, r in zip(jobs, results) if r and not j[-1] for c in r]
        groups = {c: c.rsplit("_", 1)[0] for c in train_cases}
        finish_dataset(folder, f"Dataset{int(dataset_id):03d}_{NAME}", {"0": "cineMRI"}, LABELS, len(train_cases),
                       task_entry(NAME, {"0": "cineMRI"}, LABELS, DESCRIPTION, sampling_weight=0.3),  # Hermes' sampler
                       DESCRIPTION, REFERENCE,
                       splits=grouped_folds(groups, n_folds=min(5, len(set(groups.values())))))
    return f"Dataset{int(dataset_id):03d}_{NAME}"


@console_command
def main(argv=None) -> None:
    parser = converter_parser(f"Convert M&Ms-1 (OpenDataset) into nnU-Net raw Dataset{DEFAULT_ID}_{NAME}.",
                              DEFAULT_ID,
                              layout=('OpenDataset/ with Training/Labeled/<code>/<code>_sa(_gt).nii.gz, Validation/, '
                                      'Testing/ and the info CSV'))
    args = parser.parse_args(argv)
    print(f"wrote {join(raw_root(), convert_mnms(args.i, args.d, args.np, args.overwrite))}")


if __name__ == "__main__":
    main()
