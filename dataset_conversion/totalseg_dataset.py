"""The TotalSegmentator CT dataset -> the real-anatomy benchmark's two tasks on many patients: Dataset511_RealLiverCT
(liver = 1) and Dataset512_RealSpleenCT (spleen = 1), every image showing both organs, each task labelling one, and
each task trained on other patients (partial labels as real collections have them).

Source: the TotalSegmentator dataset (Wasserthal et al.; Zenodo 10.5281/zenodo.6802613, v2.0.1 under CC BY 4.0;
1,228 subjects, or the 102 of its "small" archive), unzipped; pass its folder as -i. Expected layout (the files
used)::

    meta.csv                           ';'-separated, UTF-8 with BOM: image_id;age;gender;institute;study_type;split;...
    s0000/ct.nii.gz                    the CT (HU, int16, 1.5 mm, RAS)
    s0000/segmentations/liver.nii.gz   one binary mask per structure (117 files; liver and spleen are read)
    s0000/segmentations/spleen.nii.gz

Subjects whose scan shows both organs (both masks non-empty) are used; the rest (head, thorax, legs) are skipped.
Training: `num_train` subjects of meta.csv's `train` split per task, different subjects for the two tasks (seeded
shuffle). Held out, for both tasks (imagesTs/, labelsTs/, structuresTs/ with liver 1, spleen 2): `num_test` subjects
of the `val` split (`_a_<id>`) and `num_test` of the `test` split (`_b_<id>`), patients no task trained on. The
masks are the dataset's reference segmentations (TotalSegmentator's model output, reviewed and corrected by
its authors). Scans are written as stored; the benchmark's plans resample them to 3 x 6 x 6 mm.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (CT_CHANNELS, FILE_ENDING, ConversionError, all_or_nothing,
                                                           check_geometry, converter_parser, finish_dataset, raw_root,
                                                           read_3d, staged_dataset, task_entry, write_case)
from nnunetv2_universal.dataset_conversion.totalseg_examples import (SPACING, STRUCTURES, TASKS, description,
                                                                     task_label)

META = "meta.csv"
HELD_OUT_SPLITS = {"a": "val", "b": "test"}  # the benchmark's held-out group -> meta.csv's split
SOURCE = "TotalSegmentator dataset"
REFERENCE = "https://doi.org/10.5281/zenodo.6802613"


def read_splits(source: str) -> Dict[str, List[str]]:
    """meta.csv's subject ids per split ('train', 'val', 'test')."""
    path = join(source, META)
    if not os.path.isfile(path):
        raise ConversionError(f"{source} has no {META}: pass the unzipped TotalSegmentator dataset folder (meta.csv, "
                              f"s0000/ct.nii.gz, s0000/segmentations/...)")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    if not rows or not {"image_id", "split"} <= set(rows[0]):
        raise ConversionError(f"{path} lacks the columns image_id and split (found {sorted(rows[0]) if rows else []})")
    splits: Dict[str, List[str]] = {}
    for row in rows:
        splits.setdefault(row["split"].strip(), []).append(row["image_id"].strip())
    return splits


def read_subject(source: str, subject: str) -> Optional[Tuple[sitk.Image, sitk.Image]]:
    """(CT, structure map with liver 1 and spleen 2), or None if the scan does not show both organs."""
    folder = join(source, subject)
    masks = {}
    for name in STRUCTURES:
        mask = read_3d(join(folder, "segmentations", f"{name}{FILE_ENDING}"), subject)
        if not np.any(sitk.GetArrayViewFromImage(mask)):
            return None
        masks[name] = mask
    ct = sitk.Cast(read_3d(join(folder, f"ct{FILE_ENDING}"), subject), sitk.sitkInt16)
    structures = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    for name, mask in masks.items():
        check_geometry(ct, mask, subject)
        structures[(sitk.GetArrayViewFromImage(mask) > 0) & (structures == 0)] = STRUCTURES[name]
    image = sitk.GetImageFromArray(structures)
    image.CopyInformation(ct)
    return ct, image


def subjects_with_both(source: str, subjects: List[str], count: int, role: str,
                       rng: np.random.Generator) -> Iterator[Tuple[str, sitk.Image, sitk.Image]]:
    """`count` subjects (in a seeded order) whose scan shows both organs, read one at a time."""
    found = 0
    for subject in rng.permutation(sorted(subjects)).tolist():
        if found == count:
            return
        pair = read_subject(source, subject)
        if pair is not None:
            found += 1
            yield (subject, *pair)
    if found < count:
        raise ConversionError(f"{role}: only {found} of {len(subjects)} subjects show both liver and spleen, "
                              f"{count} needed; lower --num_train / --num_test")


def convert_totalseg_dataset(source: str, first_id: int = 511, num_train: int = 8, num_test: int = 2,
                             seed: int = 0, overwrite: bool = False) -> List[str]:
    """Write both tasks (ids first_id, first_id + 1), both or neither; returns their dataset names."""
    if num_train < 2:
        raise ConversionError(f"--num_train must be at least 2 (a train/validation split), got {num_train}")
    splits = read_splits(source)
    rng = np.random.default_rng(seed)
    names = [f"Dataset{first_id + offset:03d}_{task}" for offset, task in enumerate(TASKS)]
    with all_or_nothing(), staged_dataset(first_id, list(TASKS)[0], overwrite) as liver_folder, \
            staged_dataset(first_id + 1, list(TASKS)[1], overwrite) as spleen_folder:
        folders = dict(zip(TASKS, (liver_folder, spleen_folder)))
        training = subjects_with_both(source, splits.get("train", []), 2 * num_train, "meta.csv split 'train'", rng)
        for k, (subject, ct, structures) in enumerate(training):
            task = list(TASKS)[k // num_train]  # the first num_train subjects label the liver, the next the spleen
            write_case(folders[task], f"{task.lower()}_{subject}", [ct], task_label(task, structures))
        for folder in folders.values():
            for sub in ("labelsTs", "structuresTs"):
                os.makedirs(join(folder, sub))
        for role, split in HELD_OUT_SPLITS.items():
            held_out = subjects_with_both(source, splits.get(split, []), num_test, f"meta.csv split '{split}'", rng)
            for subject, ct, structures in held_out:
                for task, folder in folders.items():
                    case = f"{task.lower()}_{role}_{subject}"
                    write_case(folder, case, [ct], None, split="Ts")
                    sitk.WriteImage(task_label(task, structures), join(folder, "labelsTs", case + FILE_ENDING), True)
                    sitk.WriteImage(structures, join(folder, "structuresTs", case + FILE_ENDING), True)
        for task, folder in folders.items():
            labels = {"background": 0, TASKS[task]: 1}
            finish_dataset(folder, task, CT_CHANNELS, labels, num_train,
                           task_entry(task, CT_CHANNELS, labels, description(task, SOURCE), spacing=SPACING),
                           description(task, SOURCE), reference=REFERENCE, license=f"CC BY 4.0 ({SOURCE})")
    return names


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert the TotalSegmentator CT dataset into the real-anatomy benchmark's two partially "
                              "labelled tasks (liver, spleen) on many patients: datasets 511 and 512.", 511,
                              layout="the unzipped TotalSegmentator dataset (meta.csv, sXXXX/ct.nii.gz, "
                                     "sXXXX/segmentations/liver.nii.gz, spleen.nii.gz)")
    parser.add_argument("--num_train", type=int, default=8, help="training subjects per task (default 8)")
    parser.add_argument("--num_test", type=int, default=2,
                        help="held-out subjects of each of meta.csv's val and test splits (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject choice (default 0)")
    args = parser.parse_args(argv)
    for name in convert_totalseg_dataset(args.i, args.d, args.num_train, args.num_test, args.seed, args.overwrite):
        print(f"wrote {join(raw_root(), name)}")


if __name__ == "__main__":
    main()
