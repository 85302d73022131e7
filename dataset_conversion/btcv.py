"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen, MICCAI 2015) -> nnU-Net raw Dataset612_BTCV
(default id 612, name "BTCV").

Expected source layout (the Synapse "RawData" download, extracted)::

    RawData/                                <- pass this folder or its parent as -i
        Training/img/img0001.nii.gz         CT, 30 labelled cases: 0001-0010 and 0021-0040
        Training/label/label0001.nii.gz     the label map of img0001
        Testing/img/img0061.nii.gz          20 unlabelled test CTs (0061-0080) -> imagesTs/ (optional folder)

Case ids `bcv_<int>` (img0001 -> bcv_1, img0061 -> bcv_61), as UniSeg's Task060_BTCV. A training image without
its label (or a label without its image) is an error naming the case; `._*` files are ignored.

Labels (kept, 14 classes incl. background): 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus,
6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic vein, 11 pancreas, 12 right adrenal
gland, 13 left adrenal gland; any other value is an error naming the case. One CT channel. BTCV is a UniSeg
downstream task: the task entry has no spacing (stock nnU-Net planning), CT window [-325, 325] HU (registry
default).

Split: splits_final.json with UniSeg's fixed split as fold 0: train bcv_1..10 and bcv_21..31 (21), val
bcv_32..40 (9); only cases present in the source are listed. If the source holds cases outside that split, or
the present cases leave train or val empty, the fixed split does not cover the data: a seeded 80/20 split
(toolkit.seeded_split, seed 1234) is written instead and a message says so.
"""
from __future__ import annotations

import os
import re
from typing import List, Sequence, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import Case, case_number, convert_cases, reject_options
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, numbered_files,
                                                           raw_root, require_nonempty, seeded_split, task_entry)

DEFAULT_ID = 612
NAME = "BTCV"
ORGANS = ["spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "inferior_vena_cava", "portal_and_splenic_vein", "pancreas", "right_adrenal_gland", "left_adrenal_gland"]
LABELS = {"background": 0, **{organ: i + 1 for i, organ in enumerate(ORGANS)}}
MAPPING = {i: i for i in range(len(LABELS))}
DESCRIPTION = ("Abdominal CT with segmentations of 13 organs: spleen, right and left kidney, gallbladder, "
               "esophagus, liver, stomach, aorta, inferior vena cava, portal and splenic vein, pancreas, and right "
               "and left adrenal gland.")
REFERENCE = ("Landman et al., MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault - Workshop and Challenge; "
             "https://www.synapse.org/#!Synapse:syn3193805")
UNISEG_TRAIN = [f"bcv_{i}" for i in list(range(1, 11)) + list(range(21, 32))]
UNISEG_VAL = [f"bcv_{i}" for i in range(32, 41)]

_IMAGE = re.compile(r"^img(\d+)\.nii\.gz$")
_LABEL = re.compile(r"^label(\d+)\.nii\.gz$")


def _raw_data_folder(source: str) -> str:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for folder in (source, join(source, "RawData")):
        if os.path.isdir(join(folder, "Training", "img")):
            return folder
    raise ConversionError(f"{source}: expected RawData/Training/img/img0001.nii.gz (pass the RawData folder or its "
                          f"parent)")


def find_cases(source: str) -> Tuple[List[Case], List[Case]]:
    """Labelled training cases and unlabelled test cases."""
    root = _raw_data_folder(source)
    image_dir, label_dir = join(root, "Training", "img"), join(root, "Training", "label")
    images = numbered_files(image_dir, _IMAGE, "bcv_")
    require_nonempty(images, f"BTCV training images (imgNNNN.nii.gz) in {image_dir}")
    if not os.path.isdir(label_dir):
        raise ConversionError(f"{root}: Training/label/ is missing")
    labels = numbered_files(label_dir, _LABEL, "bcv_")
    cases = []
    for number in sorted(images):
        if number not in labels:
            raise ConversionError(f"case bcv_{number}: label file {join(label_dir, f'label{number:04d}.nii.gz')} "
                                  f"is missing")
        cases.append((f"bcv_{number}", images[number], labels[number]))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise ConversionError(f"case bcv_{orphans[0]}: {labels[orphans[0]]} has no image in {image_dir}")
    test_dir = join(root, "Testing", "img")
    tests = numbered_files(test_dir, _IMAGE, "bcv_") if os.path.isdir(test_dir) else {}
    test_cases = [(f"bcv_{n}", path, None) for n, path in sorted(tests.items())]
    return cases, test_cases


def make_splits(case_ids: Sequence[str]) -> Tuple[List[dict], bool]:
    """UniSeg's fixed fold 0 restricted to the present cases, or a seeded 80/20 fold if it does not cover them.
    Returns (splits, fixed split used)."""
    present = set(case_ids)
    train = [c for c in UNISEG_TRAIN if c in present]
    val = [c for c in UNISEG_VAL if c in present]
    uncovered = sorted(present - set(UNISEG_TRAIN) - set(UNISEG_VAL), key=case_number)
    if not uncovered and train and val:
        return [{"train": train, "val": val}], True
    train, val = seeded_split(case_ids)
    return [{"train": sorted(train, key=case_number), "val": sorted(val, key=case_number)}], False


def convert_btcv(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                 **options) -> str:
    """Convert BTCV (training cases + Testing images); returns the dataset folder name."""
    reject_options(options)
    cases, test_cases = find_cases(source)
    splits, fixed = make_splits([c[0] for c in cases])
    if not fixed:
        print(f"BTCV: UniSeg's fixed split (train bcv_1..10, bcv_21..31; val bcv_32..40) does not cover the "
              f"{len(cases)} cases found; writing a seeded 80/20 split instead "
              f"({len(splits[0]['train'])} / {len(splits[0]['val'])})")
    task = task_entry(NAME, {"0": "CT"}, LABELS, DESCRIPTION, sampling_weight=1.5)  # Hermes' sampler weight
    return convert_cases(cases, dataset_id, NAME, LABELS, MAPPING, task, f"BTCV: {DESCRIPTION}", num_processes,
                         overwrite, reference=REFERENCE, splits=splits, test_cases=test_cases)


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert BTCV (RawData/Training/{img,label}, RawData/Testing/img) into nnU-Net raw "
                              f"Dataset{DEFAULT_ID}_{NAME} with UniSeg's fixed split.", DEFAULT_ID,
                              layout='RawData/ with Training/{img,label}/ and Testing/img/')
    args = parser.parse_args(argv)
    folder = convert_btcv(args.i, args.d, args.np, args.overwrite)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
