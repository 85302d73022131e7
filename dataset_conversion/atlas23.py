"""ATLAS 2023 (A Tumor and Liver Automated Segmentation; Quinton et al., Data 2023) -> nnU-Net raw
Dataset643_ATLAS23: contrast-enhanced T1 MRI of HCC patients, liver and tumour. M4oE head 1 (K = 3).

Not ATLAS R2.0 (Anatomical Tracings of Lesions After Stroke, BIDS folders `sub-r001s001`, `ATLAS_2`): such a source
is refused with a message.

Expected layout (pass the release folder or its parent as -i)::

    atlas-train-dataset-1.0.1/train/imagesTr/im0.nii.gz ... im59.nii.gz
    atlas-train-dataset-1.0.1/train/labelsTr/lb0.nii.gz  ... (lb<N> belongs to im<N>)

Labels: 1 liver, 2 tumour. Case ids `atlas23_<n>`. Channel "CE-MRI" (contrast-enhanced; per-image z-score).
Split: seeded 80/20.
"""
from __future__ import annotations

import os
import re

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, case_number, converter_parser,
                                                           convert_cases, numbered_files, paired_cases, raw_root,
                                                           require_nonempty, seeded_split, task_entry)

DEFAULT_ID = 643
NAME = "ATLAS23"
LABELS = {"background": 0, "liver": 1, "tumour": 2}
CHANNELS = {"0": "CE-MRI"}  # contrast-enhanced T1: M4oE's CE-MRI expert
DESCRIPTION = "Contrast-enhanced T1 liver MRI (ATLAS 2023) with liver and tumour."
REFERENCE = "Quinton et al., Data 8(5):79, 2023; https://atlas-challenge.u-bourgogne.fr"
_IMAGE = re.compile(r"^im(\d+)\.nii\.gz$")
_LABEL = re.compile(r"^lb(\d+)\.nii\.gz$")


def _looks_like_stroke_atlas(source: str) -> bool:
    for _, dirs, files in os.walk(source):
        if any(d.startswith("sub-r") or d.startswith("ATLAS_2") for d in dirs) or \
                any(f.endswith("_T1w.nii.gz") for f in files):
            return True
    return False


def find_train_folder(source: str) -> str:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for folder in (source, join(source, "train"), join(source, "atlas-train-dataset-1.0.1", "train")):
        if os.path.isdir(join(folder, "imagesTr")):
            return folder
    if _looks_like_stroke_atlas(source):
        raise ConversionError(f"{source} looks like ATLAS R2.0 (stroke lesions, BIDS sub-r*/ folders), not ATLAS 2023 "
                              f"(liver and tumour MRI) that M4oE uses")
    raise ConversionError(f"{source}: expected atlas-train-dataset-1.0.1/train/imagesTr/im0.nii.gz")


def convert_atlas23(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False) -> str:
    folder = find_train_folder(source)
    images = require_nonempty(numbered_files(join(folder, "imagesTr"), _IMAGE, "atlas23_").items(),
                              f"ATLAS 2023 images (im<N>.nii.gz) in {join(folder, 'imagesTr')}")
    cases = paired_cases(dict(images), numbered_files(join(folder, "labelsTr"), _LABEL, "atlas23_"), "atlas23_",
                         join(folder, "labelsTr"))
    train, val = seeded_split([c[0] for c in cases])
    splits = [{"train": sorted(train, key=case_number), "val": sorted(val, key=case_number)}]
    task = task_entry(NAME, CHANNELS, LABELS, DESCRIPTION)
    return convert_cases(cases, dataset_id, NAME, LABELS, {0: 0, 1: 1, 2: 2}, task, DESCRIPTION, num_processes,
                         overwrite, reference=REFERENCE, splits=splits, channels=CHANNELS)


@console_command
def main(argv=None) -> None:
    parser = converter_parser(f"Convert ATLAS 2023 (liver + tumour MRI) into nnU-Net raw Dataset{DEFAULT_ID}_{NAME}.",
                              DEFAULT_ID,
                              layout=('atlas-train-dataset-1.0.1/train/ with imagesTr/imN.nii.gz and '
                                      'labelsTr/lbN.nii.gz'))
    args = parser.parse_args(argv)
    print(f"wrote {join(raw_root(), convert_atlas23(args.i, args.d, args.np, args.overwrite))}")


if __name__ == "__main__":
    main()
