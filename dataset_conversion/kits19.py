"""KiTS19 (kidney + kidney tumour CT) -> nnU-Net raw Dataset602_KiTS19 (default id 602, name "KiTS19").

Expected source layout (the github.com/neheller/kits19 clone after `python -m starter_code.get_imaging`)::

    kits19/                                 <- pass this folder or kits19/data as -i
        data/
            kits.json                       (ignored)
            case_00000/imaging.nii.gz       CT
            case_00000/segmentation.nii.gz  labels (cases 00000-00209)
            ...
            case_00299/imaging.nii.gz       test cases 00210-00299 have no segmentation: skipped

Case ids `kidney_<int>` (case_00007 -> kidney_7, as UniSeg's prepare_Kidney_Dataset.py). A labelled case whose
imaging.nii.gz is missing (images not downloaded yet) is an error naming the case.

Labels (kept): 0 background, 1 kidney, 2 tumour; any other value is an error naming the case. One CT channel.
Task entry: UniSeg upstream task 1, target spacing (z, y, x) [3, 1.5, 1.5] mm, CT window [-325, 325] HU.

Split: splits_final.json with one fold, a seeded 80/20 split (toolkit.seeded_split, seed 1234: 168 / 42 for the
210 labelled cases). The reference split (DoDNet's MOTS split, inherited by UniSeg's splits_final_11_tasks.pkl)
leaks: kidney_1 and kidney_2 are in both train and val. This converter checks that no case is in both lists and
raises ConversionError otherwise.

Geometry quirk: KiTS19 volumes are stored slice-axis-first (nibabel shape (num_slices, height, width)) with a
non-standard affine; read through SimpleITK the slice axis is SimpleITK axis 0, i.e. the LAST axis of nnU-Net's
arrays, and the direction matrix is a permutation-like matrix. By default the geometry (array, spacing, origin,
direction) would be copied unchanged (as UniSeg did) but then a planner that suppresses nnU-Net's transpose and
imposes the (z, y, x) spacing [3, 1.5, 1.5] (our collection planner, like the reference) resamples an in-plane
axis to 3 mm and the slice axis to 1.5 mm. So by default the voxel axes are permuted losslessly (physical position
of every voxel unchanged, direction and spacing permuted accordingly) so that the axis with the largest spacing
becomes the first nnU-Net array axis; cases already in that order are left untouched. `--keep_axes` keeps the
files' axis order.
"""
from __future__ import annotations

import os
import re
from typing import List, Sequence, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import UNISEG_SPACING, Case, case_number, convert_cases, reject_options
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, listdir_visible,
                                                           raw_root, require_nonempty, seeded_split, task_entry)

DEFAULT_ID = 602
NAME = "KiTS19"
LABELS = {"background": 0, "kidney": 1, "tumour": 2}
MAPPING = {0: 0, 1: 1, 2: 2}
DESCRIPTION = "Abdominal CT with segmentations of the kidneys and kidney tumours."
REFERENCE = ("Heller et al., The KiTS19 challenge data: 300 kidney tumor cases with clinical context, CT semantic "
             "segmentations, and surgical outcomes, arXiv:1904.00445; https://github.com/neheller/kits19")
TRAIN_FRACTION = 0.8
SEED = 1234

_CASE_FOLDER = re.compile(r"^case_(\d+)$")


def _data_folder(source: str) -> str:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for folder in (source, join(source, "data")):
        if os.path.isdir(folder) and any(_CASE_FOLDER.match(d) for d in listdir_visible(folder)):
            return folder
    raise ConversionError(f"{source}: no case_XXXXX folders found here or in {join(source, 'data')} "
                          f"(expected kits19/data/case_00000/imaging.nii.gz)")


def find_cases(source: str) -> Tuple[List[Case], List[str]]:
    """Labelled cases and the names of the skipped (unlabelled test) case folders."""
    data = _data_folder(source)
    cases, skipped = [], []
    for d in listdir_visible(data):
        match = _CASE_FOLDER.match(d)
        if match is None or not os.path.isdir(join(data, d)):
            continue
        case = f"kidney_{int(match.group(1))}"
        image, label = join(data, d, "imaging.nii.gz"), join(data, d, "segmentation.nii.gz")
        if not os.path.isfile(label):
            skipped.append(d)
            continue
        if not os.path.isfile(image):
            raise ConversionError(f"case {case}: {image} is missing (download the images with kits19's "
                                  f"starter_code/get_imaging.py)")
        cases.append((case, image, label))
    require_nonempty(cases, f"labelled KiTS19 cases (case_XXXXX/segmentation.nii.gz) in {data}")
    return sorted(cases, key=lambda c: case_number(c[0])), skipped


def make_splits(case_ids: Sequence[str]) -> List[dict]:
    """One seeded 80/20 fold; no case may be in both train and val (the reference split leaked kidney_1/2)."""
    train, val = seeded_split(case_ids, TRAIN_FRACTION, SEED)
    leaked = sorted(set(train) & set(val), key=case_number)
    if leaked:
        raise ConversionError(f"KiTS19 split: cases {leaked} are in both train and val")
    lost = sorted(set(case_ids) - set(train) - set(val), key=case_number)
    if lost or len(train) + len(val) != len(set(case_ids)):
        raise ConversionError(f"KiTS19 split: cases {lost} are in neither train nor val")
    return [{"train": sorted(train, key=case_number), "val": sorted(val, key=case_number)}]


def convert_kits19(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                   reorder_axes: bool = True, **options) -> str:
    """Convert KiTS19; returns the dataset folder name."""
    reject_options(options)
    cases, skipped = find_cases(source)
    if skipped:
        print(f"KiTS19: skipping {len(skipped)} case folder(s) without segmentation.nii.gz (test cases)")
    splits = make_splits([c[0] for c in cases])
    task = task_entry(NAME, {"0": "CT"}, LABELS, DESCRIPTION, spacing=UNISEG_SPACING, sampling_weight=0.3)
    return convert_cases(cases, dataset_id, NAME, LABELS, MAPPING, task, f"KiTS19: {DESCRIPTION}", num_processes,
                         overwrite, reference=REFERENCE, splits=splits,
                         reorder_axes=reorder_axes)


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert KiTS19 (kits19/data/case_XXXXX/{imaging,segmentation}.nii.gz) into nnU-Net "
                              f"raw Dataset{DEFAULT_ID}_{NAME} with a leak-free seeded 80/20 split.", DEFAULT_ID,
                              layout='kits19/data/ (or kits19/) with case_XXXXX/{imaging,segmentation}.nii.gz')
    parser.add_argument("--keep_axes", action="store_true",
                        help="keep the files' voxel axis order (default: losslessly permute the axes so that the "
                             "slice axis, the one with the largest spacing, comes first in nnU-Net's arrays)")
    args = parser.parse_args(argv)
    folder = convert_kits19(args.i, args.d, args.np, args.overwrite, reorder_axes=not args.keep_axes)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
