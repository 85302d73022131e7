"""AMOS22 (Ji et al., NeurIPS 2022) -> nnU-Net raw Dataset641_AMOS22CT and Dataset642_AMOS22MR (one dataset per
modality, one command). 15 abdominal organs. M4oE head 2 (K = 16 with background); AMOS-CT and AMOS CT+MR are
reported separately in the paper.

Expected layout (pass amos22 or its parent as -i)::

    amos22/imagesTr/amos_0001.nii.gz   amos22/labelsTr/amos_0001.nii.gz
    amos22/imagesVa/amos_0008.nii.gz   amos22/labelsVa/amos_0008.nii.gz   (labels in the post-challenge release)
    amos22/imagesTs/amos_0002.nii.gz
    amos22/dataset.json                (the release's own; not needed)

Modality by case number: CT <= 500, MR >= 501. Labels (kept): 1 spleen, 2 right kidney, 3 left kidney,
4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 postcava (IVC), 10 pancreas, 11 right adrenal gland,
12 left adrenal gland, 13 duodenum, 14 bladder, 15 prostate/uterus. Case ids `amos_<n>`. Channel names "CT" and
"MRI" (MR: per-image z-score). Split: imagesTr -> train, labelled imagesVa -> val (seeded 80/20 of imagesTr when
the validation labels are absent); imagesTs -> imagesTs. Each dataset is written atomically; `--modality ct|mr`
writes one of them.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (all_or_nothing, Case, case_number, ConversionError,
                                                           convert_cases, converter_parser, numbered_files,
                                                           paired_cases, raw_root, seeded_split, task_entry)

DEFAULT_IDS = {"ct": 641, "mr": 642}
NAMES = {"ct": "AMOS22CT", "mr": "AMOS22MR"}
CHANNELS = {"ct": {"0": "CT"}, "mr": {"0": "MRI"}}
ORGANS = ["spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "postcava", "pancreas", "right_adrenal_gland", "left_adrenal_gland", "duodenum", "bladder",
          "prostate_uterus"]
LABELS = {"background": 0, **{organ: i + 1 for i, organ in enumerate(ORGANS)}}
HERMES_SAMPLING_WEIGHT = {"ct": 1.8, "mr": 1.6}  # Hermes' reference sampler, per case
REFERENCE = "Ji et al., AMOS, NeurIPS 2022 Datasets and Benchmarks; https://amos22.grand-challenge.org"
_FILE = re.compile(r"^amos_(\d+)\.nii\.gz$")


def modality_of(number: int) -> str:
    return "ct" if number <= 500 else "mr"


def _root(source: str) -> str:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    root = next((f for f in (source, join(source, "amos22")) if os.path.isdir(join(f, "imagesTr"))), None)
    if root is None:
        raise ConversionError(f"{source}: expected amos22/imagesTr/amos_0001.nii.gz")
    return root


def _numbered(root: str, sub: str) -> Dict[int, str]:
    return numbered_files(join(root, sub), _FILE, "amos_") if os.path.isdir(join(root, sub)) else {}


def find_cases(source: str) -> Dict[str, Tuple[List[Case], List[Case], List[Case]]]:
    """{modality: (train cases, val cases, test cases)}."""
    root = _root(source)
    train = paired_cases(_numbered(root, "imagesTr"), _numbered(root, "labelsTr"), "amos_", join(root, "labelsTr"))
    va_images, va_labels = _numbered(root, "imagesVa"), _numbered(root, "labelsVa")
    val = paired_cases(va_images, va_labels, "amos_", join(root, "labelsVa")) if va_labels else []
    test = [(f"amos_{n}", p, None) for n, p in sorted(_numbered(root, "imagesTs").items())]
    out = {}
    for modality in ("ct", "mr"):
        def pick(cases):
            return [c for c in cases if modality_of(case_number(c[0])[1]) == modality]
        out[modality] = (pick(train), pick(val), pick(test))
    return out


def convert_amos22(source: str, num_processes: int = 1, overwrite: bool = False, modality: str = "both",
                   dataset_ids: Dict[str, int] = None) -> List[str]:
    if modality not in ("ct", "mr", "both"):
        raise ValueError(f"modality must be ct, mr or both, got {modality!r}")
    ids = {**DEFAULT_IDS, **(dataset_ids or {})}
    cases = find_cases(source)
    with all_or_nothing():  # CT and MR come from one download: both datasets or none
        written = []
        for m in (("ct", "mr") if modality == "both" else (modality,)):
            train, val, test = cases[m]
            if not train:
                raise ConversionError(f"AMOS22: no labelled {m.upper()} cases in {source}")
            if val:
                splits = [{"train": [c[0] for c in train], "val": [c[0] for c in val]}]
            else:
                tr, va = seeded_split([c[0] for c in train])
                splits = [{"train": sorted(tr, key=case_number), "val": sorted(va, key=case_number)}]
            description = f"Abdominal {'CT' if m == 'ct' else 'MRI'} (AMOS22) with 15 organs."
            # CT and MR label the same organs: one structure each (Hermes shares their task tokens, as the reference)
            task = task_entry(NAMES[m], CHANNELS[m], LABELS, description,
                              structures={organ: f"AMOS22/{organ}" for organ in ORGANS},
                              sampling_weight=HERMES_SAMPLING_WEIGHT[m])
            identity = {i: i for i in range(len(LABELS))}
            written.append(convert_cases(train + val, ids[m], NAMES[m], LABELS, identity, task, description,
                                         num_processes, overwrite, reference=REFERENCE, splits=splits,
                                         test_cases=test, channels=CHANNELS[m]))
    return written


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert AMOS22 into nnU-Net raw Dataset641_AMOS22CT and Dataset642_AMOS22MR.",
                              DEFAULT_IDS["ct"],
                              layout=('amos22/ with imagesTr/ labelsTr/ [imagesVa/ labelsVa/] imagesTs/ '
                                      '(amos_NNNN.nii.gz)'))
    parser.add_argument("-d_mr", type=int, default=DEFAULT_IDS["mr"], help="dataset id of the MR part (default 642)")
    parser.add_argument("--modality", default="both", choices=("ct", "mr", "both"),
                        help="which of AMOS22's modalities to convert (one dataset each)")
    args = parser.parse_args(argv)
    for folder in convert_amos22(args.i, args.np, args.overwrite, args.modality, {"ct": args.d, "mr": args.d_mr}):
        print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
