"""AutoPET (FDG-PET-CT-Lesions) -> nnU-Net raw Dataset611_AutoPETTumour (default id 611).

Source: the NIfTI tree the challenge's DICOM-to-NIfTI script produces,
`<root>/PETCT_<patient>/<study folder>/{CT,CTres,PET,SUV,SEG}.nii.gz` (study folder names contain dates and spaces;
a patient may have several studies). Channels: 0 = CTres ("CT", CT resampled to the PET grid), 1 = SUV ("PET").
Label SEG: 1 lesion; any other value stops the conversion naming the case. Case id `PETCT_<patient>_<k>`, k = index
of the study in the patient's sorted study folders. As the UniSeg paper, studies without any lesion (negative
controls) are dropped; `--keep_negatives` keeps them. CTres, SUV and SEG must share geometry. UniSeg target
spacing [8, 4, 4]; CT window on channel 0, z-score on the SUV (the registry defaults for "CT" and "PET").
`--suv_only`: the SUV channel alone (channel 0 "PET"), as Hermes' reference feeds AutoPET (a 1-channel task).
Splits: 5 folds grouped by patient (all studies of a patient in the same fold). The reference split studies at
random, so a patient's studies could fall on both sides; we do not reproduce that.
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (check_geometry, converter_parser, dataset_name,
                                                           finish_dataset, grouped_folds, listdir_visible, raw_root,
                                                           read_3d, reject_options, remap_labels, require_nonempty,
                                                           run_cases, staged_dataset, task_entry, write_case)

DEFAULT_ID = 611
NAME = "AutoPETTumour"
CHANNELS = {"0": "CT", "1": "PET"}
SUV_ONLY_CHANNELS = {"0": "PET"}
LABELS = {"background": 0, "lesion": 1}
DESCRIPTION = "Whole-body FDG PET/CT (CT and SUV) with FDG-avid tumour lesions segmented."
REFERENCE = ("Gatidis et al., A whole-body FDG-PET/CT dataset with manually annotated tumor lesions, Sci Data 9, "
             "601 (2022)")


def find_studies(source: str) -> List[Tuple[str, str, str]]:
    """(case id, patient, study folder) for every study holding a SEG.nii.gz."""
    studies = []
    for patient in listdir_visible(source):
        if not patient.startswith("PETCT_") or not os.path.isdir(join(source, patient)):
            continue
        folders = [s for s in listdir_visible(join(source, patient)) if os.path.isdir(join(source, patient, s))]
        for k, study in enumerate(folders):
            studies.append((f"{patient}_{k}", patient, join(source, patient, study)))
    return require_nonempty(studies, f"PETCT_<patient>/<study>/ folders in {source}")


def is_positive(case: str, study: str) -> bool:
    return bool(np.any(sitk.GetArrayFromImage(read_3d(join(study, "SEG.nii.gz"), case))))


def convert_study(output: str, case: str, study: str, suv_only: bool = False) -> str:
    files = ("SUV.nii.gz",) if suv_only else ("CTres.nii.gz", "SUV.nii.gz")
    channels = [read_3d(join(study, f), case) for f in files]
    seg = read_3d(join(study, "SEG.nii.gz"), case)
    for channel in channels:
        check_geometry(channel, seg, case)
    write_case(output, case, channels, remap_labels(seg, {0: 0, 1: 1}, case))
    return case


def convert_autopet(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                    keep_negatives: bool = False, suv_only: bool = False, **options) -> str:
    reject_options(options)
    studies = find_studies(source)
    if not keep_negatives:
        kept = [s for s in studies if is_positive(s[0], s[2])]
        print(f"AutoPET: dropping {len(studies) - len(kept)} studies without lesions (--keep_negatives keeps them)")
        studies = require_nonempty(kept, "studies with lesions")
    name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        run_cases(convert_study, [(folder, c, s, suv_only) for c, _, s in studies], num_processes,
                  f"converting {name}")
        n_folds = min(5, len({p for _, p, _ in studies}))
        channels = SUV_ONLY_CHANNELS if suv_only else CHANNELS
        finish_dataset(folder, name, channels, LABELS, len(studies),
                       task_entry(NAME, channels, LABELS, DESCRIPTION, spacing=(8.0, 4.0, 4.0), prior_modality="PET",
                                  sampling_weight=0.1),  # Hermes' reference sampler weight per case
                       f"AutoPET: {DESCRIPTION}", reference=REFERENCE,
                       splits=grouped_folds({c: p for c, p, _ in studies}, n_folds) if n_folds > 1 else None)
    return name


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert AutoPET (PETCT_<patient>/<study>/{CTres,SUV,SEG}.nii.gz) into nnU-Net raw "
                              f"Dataset{DEFAULT_ID}_{NAME} (CT + PET, lesion studies only by default).", DEFAULT_ID,
                              layout='FDG-PET-CT-Lesions/ with PETCT_<patient>/<study>/{CTres,SUV,SEG}.nii.gz')
    parser.add_argument("--keep_negatives", action="store_true", help="keep studies without lesions")
    parser.add_argument("--suv_only", action="store_true",
                        help="write the SUV channel only (Hermes' reference input) instead of CTres + SUV")
    args = parser.parse_args(argv)
    folder = convert_autopet(args.i, args.d, args.np, args.overwrite, keep_negatives=args.keep_negatives,
                             suv_only=args.suv_only)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
