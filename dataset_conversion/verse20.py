"""VerSe 2020 -> nnU-Net raw Dataset608_VerSe20Binary (default id 608), binary vertebrae as UniSeg uses it.

Source: a folder holding any of `dataset-01training`, `dataset-02validation`, `dataset-03test`, each with
`rawdata/sub-<id>/<entities>_ct.nii.gz` and `derivatives/sub-<id>/<entities>_seg-vert_msk.nii.gz` (BIDS-like;
subject ids like sub-verse500, sub-gl003; split scans carry an extra entity, e.g.
`sub-verse510_split-verse291_ct.nii.gz`). CT and mask are matched by the full entity prefix (everything before
`_ct` / `_seg-vert_msk`), never by folder: a subject folder may be empty (skipped), hold several scans (each becomes
a case named by its entity prefix) or a CT without mask (skipped: nothing to train on). Skipped scans are listed
at the end. Labels: every vertebra value (1-28) -> 1. Every image and mask is reoriented to SimpleITK's "LPS"
orientation (identity direction; the reference reoriented to nibabel's RAS, the same idea: one common axis order),
the same way for both, so they stay aligned. Volumes with more than `--max_slices` (default 500, as the reference)
slices along SimpleITK axis 2 are resampled to that many (image linear, mask nearest; spacing scaled so the
physical extent is kept). UniSeg target spacing [4, 2, 2], CT window. Split: one 80/20 fold grouped by subject (all
scans of a subject on one side; fold 0 of 5 subject-grouped folds).
"""
from __future__ import annotations

import os
import re
from typing import List, Tuple

import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (CT_CHANNELS, binarize, check_geometry, converter_parser,
                                                           dataset_name, finish_dataset, grouped_folds,
                                                           listdir_visible, raw_root, read_3d, reject_options,
                                                           require_nonempty, run_cases, staged_dataset, task_entry,
                                                           write_case)

DEFAULT_ID = 608
NAME = "VerSe20Binary"
PARTS = ("dataset-01training", "dataset-02validation", "dataset-03test")
LABELS = {"background": 0, "vertebrae": 1}
DESCRIPTION = "Spine CT with all vertebrae segmented as one structure."
REFERENCE = "Sekuboyina et al., VerSe: A Vertebrae labelling and segmentation benchmark, MedIA 73 (2021)"
_CT = re.compile(r"^(sub-[^_]+.*)_ct\.nii(\.gz)?$")


def find_scans(source: str) -> Tuple[List[Tuple[str, str, str, str]], List[str]]:
    """([(case id, subject, ct, mask)], [skipped scan descriptions])."""
    parts = [p for p in PARTS if os.path.isdir(join(source, p))] or ["."]
    scans, skipped = [], []
    for part in parts:
        raw_dir, der_dir = join(source, part, "rawdata"), join(source, part, "derivatives")
        if not os.path.isdir(raw_dir):
            continue
        for subject in listdir_visible(raw_dir):
            files = listdir_visible(join(raw_dir, subject)) if os.path.isdir(join(raw_dir, subject)) else []
            cts = [(m[1], f) for f in files if (m := _CT.match(f))]
            if not cts:
                skipped.append(f"{part}/{subject}: no CT")
            for prefix, ct in cts:
                mask = next((join(der_dir, subject, f"{prefix}_seg-vert_msk{ext}") for ext in (".nii.gz", ".nii")
                             if os.path.isfile(join(der_dir, subject, f"{prefix}_seg-vert_msk{ext}"))), None)
                if mask is None:
                    skipped.append(f"{part}/{subject}/{ct}: no mask")
                    continue
                scans.append((prefix, subject, join(raw_dir, subject, ct), mask))
    return scans, skipped


def _limit_slices(image: sitk.Image, max_slices: int, is_label: bool) -> sitk.Image:
    size, spacing = list(image.GetSize()), list(image.GetSpacing())
    if size[2] <= max_slices:
        return image
    new_spacing = spacing[:2] + [spacing[2] * size[2] / max_slices]
    return sitk.Resample(image, size[:2] + [max_slices], sitk.Transform(),
                         sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear, image.GetOrigin(), new_spacing,
                         image.GetDirection(), 0, image.GetPixelID())


def convert_scan(output: str, case: str, ct_path: str, mask_path: str, max_slices: int) -> str:
    ct, mask = read_3d(ct_path, case), read_3d(mask_path, case)
    check_geometry(ct, mask, case)
    ct, mask = sitk.DICOMOrient(ct, "LPS"), sitk.DICOMOrient(mask, "LPS")
    ct, mask = _limit_slices(ct, max_slices, False), _limit_slices(mask, max_slices, True)
    write_case(output, case, [ct], binarize(mask))
    return case


def convert_verse20(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                    max_slices: int = 500, **options) -> str:
    reject_options(options)
    scans, skipped = find_scans(source)
    require_nonempty(scans, f"CT scans with masks under {source} ({', '.join(PARTS)})")
    folds = grouped_folds({case: subject for case, subject, _, _ in scans}, n_folds=min(5, len(scans)))
    name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        run_cases(convert_scan, [(folder, c, ct, m, max_slices) for c, _, ct, m in scans], num_processes,
                  f"converting {name}")
        finish_dataset(folder, name, CT_CHANNELS, LABELS, len(scans),
                       task_entry(NAME, CT_CHANNELS, LABELS, DESCRIPTION, spacing=(4.0, 2.0, 2.0)),
                       f"VerSe 2020, binarised: {DESCRIPTION}", reference=REFERENCE,
                       splits=folds[:1] if len(folds) > 1 else None)
    if skipped:
        print(f"VerSe20: skipped {len(skipped)} scan(s)/folder(s):\n  " + "\n  ".join(skipped))
    return name


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert VerSe 2020 (dataset-0X*/rawdata + derivatives) into nnU-Net raw "
                              f"Dataset{DEFAULT_ID}_{NAME} (binary vertebrae).", DEFAULT_ID,
                              layout=('the folder holding dataset-01training/ dataset-02validation/ dataset-03test/ '
                                      '(rawdata/ + derivatives/)'))
    parser.add_argument("--max_slices", type=int, default=500,
                        help="resample volumes with more slices along axis z to this many (default 500)")
    args = parser.parse_args(argv)
    folder = convert_verse20(args.i, args.d, args.np, args.overwrite, max_slices=args.max_slices)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
