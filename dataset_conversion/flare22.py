"""FLARE22 (MICCAI 2022 Fast and Low-resource semi-supervised Abdominal oRgan sEgmentation) -> nnU-Net raw
Dataset640_FLARE22: the 50 labelled abdominal CTs, 13 organs. M4oE head 0 (K = 14 with background).

Expected layout (pass FLARE22Train or its parent as -i)::

    FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz     CT
    FLARE22Train/labels/FLARE22_Tr_0001.nii.gz          labels

Labels (kept): 1 liver, 2 right kidney, 3 spleen, 4 pancreas, 5 aorta, 6 inferior vena cava, 7 right adrenal
gland, 8 left adrenal gland, 9 gallbladder, 10 esophagus, 11 stomach, 12 duodenum, 13 left kidney (FLARE's order,
which differs from BTCV's and AMOS's). Case ids `flare22_<n>`. Split: seeded 80/20.

Overlap warning: FLARE22's labelled images and pancreas labels come from MSD Task07 Pancreas (the other organs from
AbdomenCT-1K). Training on FLARE22 and evaluating on MSD Pancreas (or UniSeg's collection, which contains it)
leaks. `--exclude_msd_pancreas <Task07_Pancreas folder>` drops FLARE cases whose CT has the size, spacing and origin
of an MSD Pancreas CT (a header comparison: cheap, and the re-released images keep their geometry).
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (CT_CHANNELS, Case, ConversionError, case_number,
                                                           converter_parser, convert_cases, listdir_visible,
                                                           numbered_files,
                                                           paired_cases, raw_root, require_nonempty, seeded_split,
                                                           task_entry)

DEFAULT_ID = 640
NAME = "FLARE22"
CHANNELS = CT_CHANNELS
ORGANS = ["liver", "right_kidney", "spleen", "pancreas", "aorta", "inferior_vena_cava", "right_adrenal_gland",
          "left_adrenal_gland", "gallbladder", "esophagus", "stomach", "duodenum", "left_kidney"]
LABELS = {"background": 0, **{organ: i + 1 for i, organ in enumerate(ORGANS)}}
DESCRIPTION = "Abdominal CT (FLARE22 labelled set) with 13 organs."
REFERENCE = "Ma et al., FLARE22, https://flare22.grand-challenge.org"
_IMAGE = re.compile(r"^FLARE22_Tr_(\d+)_0000\.nii\.gz$")
_LABEL = re.compile(r"^FLARE22_Tr_(\d+)\.nii\.gz$")
OVERLAP_WARNING = ("FLARE22: the labelled images (and pancreas labels) come from MSD Task07 Pancreas; do not evaluate "
                   "on MSD Pancreas with a model trained on FLARE22 (see --exclude_msd_pancreas)")


def _geometry(path: str):
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetSize(), tuple(round(s, 4) for s in reader.GetSpacing()), tuple(round(o, 2) for o in
                                                                                    reader.GetOrigin())


def find_cases(source: str) -> List[Case]:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    root = next((f for f in (source, join(source, "FLARE22Train")) if os.path.isdir(join(f, "images"))), None)
    if root is None:
        raise ConversionError(f"{source}: expected FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz")
    images = require_nonempty(numbered_files(join(root, "images"), _IMAGE, "flare22_").items(),
                              f"FLARE22 images in {join(root, 'images')}")
    if not os.path.isdir(join(root, "labels")):
        raise ConversionError(f"{root}: labels/ is missing")
    return paired_cases(dict(images), numbered_files(join(root, "labels"), _LABEL, "flare22_"), "flare22_",
                        join(root, "labels"))


def exclude_msd_overlap(cases: List[Case], msd_folder: str) -> List[Case]:
    images = join(msd_folder, "imagesTr")
    if not os.path.isdir(images):
        raise ConversionError(f"{msd_folder}: expected MSD Task07 Pancreas with imagesTr/")
    msd = {_geometry(join(images, f)) for f in listdir_visible(images) if f.endswith((".nii.gz", ".nii"))}
    kept = [c for c in cases if _geometry(c[1]) not in msd]
    print(f"FLARE22: {len(cases) - len(kept)} case(s) with the geometry of an MSD Pancreas image excluded")
    return kept


def convert_flare22(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                    exclude_msd_pancreas: Optional[str] = None) -> str:
    cases = find_cases(source)
    if exclude_msd_pancreas:
        cases = exclude_msd_overlap(cases, exclude_msd_pancreas)
    else:
        print(OVERLAP_WARNING)
    train, val = seeded_split([c[0] for c in cases])
    splits = [{"train": sorted(train, key=case_number), "val": sorted(val, key=case_number)}]
    task = task_entry(NAME, CHANNELS, LABELS, DESCRIPTION)
    return convert_cases(cases, dataset_id, NAME, LABELS, {i: i for i in range(len(LABELS))}, task,
                         DESCRIPTION, num_processes, overwrite, reference=REFERENCE, splits=splits)


@console_command
def main(argv=None) -> None:
    parser = converter_parser(f"Convert FLARE22's labelled set into nnU-Net raw Dataset{DEFAULT_ID}_{NAME}.",
                              DEFAULT_ID,
                              layout=('FLARE22Train/ with images/FLARE22_Tr_NNNN_0000.nii.gz and '
                                      'labels/FLARE22_Tr_NNNN.nii.gz'))
    parser.add_argument("--exclude_msd_pancreas", default=None, help="MSD Task07_Pancreas folder: drop overlapping "
                                                                     "cases")
    args = parser.parse_args(argv)
    folder = convert_flare22(args.i, args.d, args.np, args.overwrite, args.exclude_msd_pancreas)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
