"""Liver + liver tumour CT (LiTS = MSD Task03_Liver) -> nnU-Net raw Dataset601_Liver (default id 601, name "Liver").

The 131 labelled LiTS training volumes are distributed in two layouts; both are accepted and detected
automatically (-i is the folder shown at the top):

(a) LiTS (Liver Tumor Segmentation Challenge), uncompressed NIfTI::

        LiTS/
            Training Batch 1/volume-0.nii ... volume-27.nii, segmentation-0.nii ... segmentation-27.nii
            Training Batch 2/volume-28.nii ... volume-130.nii, segmentation-28.nii ... segmentation-130.nii

    All files flat in one folder are accepted as well (volume-N.nii / segmentation-N.nii; `.nii.gz` also works);
    the folder and its direct sub-folders are searched. `test-volume-N.nii` (unlabelled test set) is ignored.

(b) MSD Task03_Liver::

        Task03_Liver/imagesTr/liver_N.nii.gz, Task03_Liver/labelsTr/liver_N.nii.gz  (the folder or its parent)

    `._*` macOS files are ignored; imagesTs/ and dataset.json are not used.

Case ids are `liver_N` in both layouts (N = LiTS volume number = MSD index, as in UniSeg/DoDNet), so the two
layouts give identical datasets: same case ids, arrays, geometry and dataset.json. They are the same volumes and
must never be added twice: both write the same dataset id (an existing one is only replaced with --overwrite), and
a source folder holding both layouts is rejected. Unlabelled test volumes are not converted in either layout.

Labels (kept): 0 background, 1 liver, 2 tumour; any other value is an error naming the case. One CT channel
(`liver_N_0000.nii.gz`). Task entry: UniSeg upstream task 0, target spacing (z, y, x) [3, 1.5, 1.5] mm, CT window
[-325, 325] HU (registry default).

Quirks: LiTS ships uncompressed `.nii`, which UniSeg's `*.nii.gz`-only MOTS copy silently skipped (its issue #25);
here both are read with SimpleITK and written as `.nii.gz`. The header z-spacing of LiTS volumes 28-47 is
reported to be unreliable (Hermes hard-codes corrections); it is kept as stored, as UniSeg did, so both layouts
give the same result (whether MSD Task03 corrected those headers is unverified). Image and label geometry must
agree (ConversionError naming the case otherwise); float label maps must hold integer values.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.msd import (MSD_REFERENCE, UNISEG_SPACING, Case, convert_cases,
                                                       find_msd_cases, reject_options)
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, listdir_visible,
                                                           raw_root, task_entry)

DEFAULT_ID = 601
NAME = "Liver"
MSD_FOLDER = "Task03_Liver"
LABELS = {"background": 0, "liver": 1, "tumour": 2}
MAPPING = {0: 0, 1: 1, 2: 2}
DESCRIPTION = "Abdominal CT with segmentations of the liver and liver tumours."
REFERENCE = ("Bilic et al., The Liver Tumor Segmentation Benchmark (LiTS), Medical Image Analysis 84 (2023) "
             "102680; the same volumes are MSD Task03_Liver: " + MSD_REFERENCE)

_LITS_FILE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")


def _lits_files(source: str) -> Dict[str, Dict[int, str]]:
    """{'volume': {N: path}, 'segmentation': {N: path}} from the folder and its direct sub-folders."""
    found: Dict[str, Dict[int, str]] = {"volume": {}, "segmentation": {}}
    folders = [source] + [join(source, d) for d in listdir_visible(source) if os.path.isdir(join(source, d))]
    for folder in folders:
        for f in listdir_visible(folder):
            match = _LITS_FILE.match(f)
            if match is None or not os.path.isfile(join(folder, f)):
                continue
            kind, number = match.group(1), int(match.group(2))
            if number in found[kind]:
                raise ConversionError(f"case liver_{number}: {kind} found twice: {found[kind][number]} and "
                                      f"{join(folder, f)}")
            found[kind][number] = join(folder, f)
    return found


def find_lits_cases(source: str) -> List[Case]:
    files = _lits_files(source)
    volumes, segmentations = files["volume"], files["segmentation"]
    cases = []
    for number in sorted(volumes):
        if number not in segmentations:
            expected = join(os.path.dirname(volumes[number]), f"segmentation-{number}.nii")
            raise ConversionError(f"case liver_{number}: label file {expected} is missing")
        cases.append((f"liver_{number}", volumes[number], segmentations[number]))
    orphans = sorted(set(segmentations) - set(volumes))
    if orphans:
        raise ConversionError(f"case liver_{orphans[0]}: {segmentations[orphans[0]]} has no volume-{orphans[0]}.nii")
    return cases


def detect_layout(source: str) -> str:
    """'lits' or 'msd'."""
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    msd = os.path.isdir(join(source, "imagesTr")) or os.path.isdir(join(source, MSD_FOLDER, "imagesTr"))
    files = _lits_files(source)
    lits = bool(files["volume"] or files["segmentation"])
    if msd and lits:
        raise ConversionError(f"{source} holds both the LiTS files and the MSD {MSD_FOLDER} layout; they are the "
                              f"same volumes: pass one of them")
    if msd:
        return "msd"
    if lits:
        return "lits"
    raise ConversionError(f"{source}: found neither LiTS files (volume-N.nii + segmentation-N.nii, flat or in "
                          f"'Training Batch 1'/'Training Batch 2') nor the MSD {MSD_FOLDER} layout "
                          f"(imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz)")


def find_cases(source: str) -> List[Case]:
    if detect_layout(source) == "lits":
        return find_lits_cases(source)
    return find_msd_cases(source, MSD_FOLDER, "liver", sorted(MAPPING))


def convert_liver(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                  **options) -> str:
    """Convert LiTS or MSD Task03_Liver (detected automatically); returns the dataset folder name."""
    reject_options(options)
    cases = find_cases(source)
    task = task_entry(NAME, {"0": "CT"}, LABELS, DESCRIPTION, spacing=UNISEG_SPACING, sampling_weight=0.3)
    return convert_cases(cases, dataset_id, NAME, LABELS, MAPPING, task, f"LiTS / MSD Task03_Liver: {DESCRIPTION}",
                         num_processes, overwrite, reference=REFERENCE)


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert the LiTS training set ('Training Batch 1/2' with volume-N.nii and "
                              "segmentation-N.nii) or MSD Task03_Liver (imagesTr/labelsTr) into nnU-Net raw "
                              f"Dataset{DEFAULT_ID}_{NAME} (case ids liver_N in both layouts).", DEFAULT_ID,
                              layout=("LiTS 'Training Batch 1/2' (volume-N.nii, segmentation-N.nii) or MSD "
                                      "Task03_Liver/ (imagesTr/labelsTr)"))
    args = parser.parse_args(argv)
    folder = convert_liver(args.i, args.d, args.np, args.overwrite)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
