"""BraTS 2021 -> nnU-Net raw Dataset610_BraTS21 (default id 610, name "BraTS21").

Source: `BraTS2021_Training_Data/BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz` (pass the
training-data folder or its parent). Channels in this order: 0 T1, 1 T1ce, 2 T2, 3 FLAIR. Labels as UniSeg uses
them (plain softmax labels, not nnU-Net's BraTS regions): source 2 (edema) -> 1, 1 (necrotic / non-enhancing core)
-> 2, 4 (enhancing tumour) -> 3; any other value stops the conversion naming the case. All four channels must share
the mask's geometry. Case ids keep the BraTS ids (BraTS2021_00000). UniSeg target spacing [1, 1, 1]; z-score per
channel (the registry default for MR). Split: one seeded 80/20 fold (the reference used random.seed(1234) 80/20 ->
1000 / 251; ours is our own seeded split, written to splits_final.json).
"""
from __future__ import annotations

import os
from typing import List, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, check_geometry, converter_parser,
                                                           dataset_name, finish_dataset, listdir_visible, raw_root,
                                                           read_3d, reject_options, remap_labels, require_nonempty,
                                                           run_cases, seeded_split, staged_dataset, task_entry,
                                                           write_case)

DEFAULT_ID = 610
NAME = "BraTS21"
MODALITIES = ("t1", "t1ce", "t2", "flair")
CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
LABELS = {"background": 0, "edema": 1, "necrotic_core": 2, "enhancing_tumor": 3}
MAPPING = {0: 0, 2: 1, 1: 2, 4: 3}
DESCRIPTION = ("Brain MRI (T1, contrast-enhanced T1, T2, FLAIR) of glioma with peritumoral edema, necrotic or "
               "non-enhancing tumour core and enhancing tumour.")
REFERENCE = "Baid et al., The RSNA-ASNR-MICCAI BraTS 2021 Benchmark, arXiv:2107.02314"


def find_cases(source: str) -> List[Tuple[str, str]]:
    """(case id, case folder) for every BraTS2021_XXXXX folder."""
    folder = source
    if os.path.isdir(join(source, "BraTS2021_Training_Data")):
        folder = join(source, "BraTS2021_Training_Data")
    cases = [(c, join(folder, c)) for c in listdir_visible(folder)
             if c.startswith("BraTS2021_") and os.path.isdir(join(folder, c))]
    return require_nonempty(cases, f"BraTS2021_XXXXX case folders in {folder}")


def convert_case(output: str, case: str, case_folder: str) -> str:
    images = [read_3d(join(case_folder, f"{case}_{m}.nii.gz"), case) for m in MODALITIES]
    seg_path = join(case_folder, f"{case}_seg.nii.gz")
    if not os.path.isfile(seg_path):
        raise ConversionError(f"case {case}: label {seg_path} is missing")
    seg = read_3d(seg_path, case)
    for image in images:
        check_geometry(image, seg, case)
    write_case(output, case, images, remap_labels(seg, MAPPING, case))
    return case


def convert_brats21(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                    **options) -> str:
    reject_options(options)
    cases = find_cases(source)
    train, val = seeded_split([c for c, _ in cases])
    name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        run_cases(convert_case, [(folder, c, f) for c, f in cases], num_processes, f"converting {name}")
        finish_dataset(folder, name, CHANNELS, LABELS, len(cases),
                       task_entry(NAME, CHANNELS, LABELS, DESCRIPTION, spacing=(1.0, 1.0, 1.0)),
                       f"BraTS 2021: {DESCRIPTION}", reference=REFERENCE, splits=[{"train": train, "val": val}])
    return name


@console_command
def main(argv=None) -> None:
    args = converter_parser("Convert BraTS 2021 (BraTS2021_Training_Data/BraTS2021_XXXXX/...) into nnU-Net raw "
                            f"Dataset{DEFAULT_ID}_{NAME} with UniSeg's labels.", DEFAULT_ID,
                              layout=('BraTS2021_Training_Data/ with '
                                      'BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz')).parse_args(argv)
    folder = convert_brats21(args.i, args.d, args.np, args.overwrite)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
