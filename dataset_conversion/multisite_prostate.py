"""Multi-site prostate MRI (SAML / MS-Net release) -> nnU-Net raw Dataset609_MultiSiteProstate (default id 609).

Source: a folder with the six site folders `BIDMC`, `BMC`, `HK`, `I2CVB`, `RUNMC`, `UCL`; each holds `CaseNN.nii.gz`
(T2 MR) and its mask `CaseNN_segmentation.nii.gz` (BMC: `CaseNN_Segmentation.nii.gz`; `.nii` also accepted).
Image and mask are paired by case stem, case-insensitively. Mask values differ per site (1, 2 or 255 for the
prostate) -> binarised (> 0 -> 1). Case id keeps the site: `prostate_<SITE>_<NN>` (e.g. prostate_BMC_01), so
site-wise splits stay possible. Channel {"0": "T2"}, UniSeg target spacing [3, 1.5, 1.5], z-score.
Split (fold 0, the reference protocol): per site, in sorted case order, the first int(0.8 * n) cases train and
the rest validate (the reference: 91 / 25 of 116).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, binarize, check_geometry,
                                                           converter_parser, dataset_name, finish_dataset,
                                                           listdir_visible, raw_root, read_3d, reject_options,
                                                           require_nonempty, run_cases, staged_dataset, task_entry,
                                                           write_case)

DEFAULT_ID = 609
NAME = "MultiSiteProstate"
SITES = ("BIDMC", "BMC", "HK", "I2CVB", "RUNMC", "UCL")
CHANNELS = {"0": "T2"}
LABELS = {"background": 0, "prostate": 1}
DESCRIPTION = "T2-weighted prostate MRI from six clinical sites with the whole prostate gland segmented."
REFERENCE = "Liu et al., MS-Net: Multi-Site Network for Improving Prostate Segmentation, IEEE TMI 39 (2020)"
_IMAGE = re.compile(r"^(case\d+)\.nii(\.gz)?$", re.IGNORECASE)
_MASK = re.compile(r"^(case\d+)_segmentation\.nii(\.gz)?$", re.IGNORECASE)


def find_site_cases(site_folder: str, site: str) -> List[Tuple[str, str, str]]:
    """(case id, image, mask) of one site; an image without a mask stops the conversion naming the case."""
    images: Dict[str, str] = {}
    masks: Dict[str, str] = {}
    for f in listdir_visible(site_folder):
        if m := _MASK.match(f):
            masks[m[1].lower()] = join(site_folder, f)
        elif m := _IMAGE.match(f):
            images[m[1].lower()] = join(site_folder, f)
    cases = []
    for stem in sorted(images):
        number = re.sub(r"\D", "", stem)
        case = f"prostate_{site}_{number}"
        if stem not in masks:
            raise ConversionError(f"case {case}: no mask {stem}_segmentation.nii(.gz) next to {images[stem]}")
        cases.append((case, images[stem], masks[stem]))
    return cases


def convert_case(output: str, case: str, image_path: str, mask_path: str) -> str:
    image, mask = read_3d(image_path, case), read_3d(mask_path, case)
    check_geometry(image, mask, case)
    write_case(output, case, [image], binarize(mask))
    return case


def convert_prostate(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                     **options) -> str:
    reject_options(options)
    present = [s for s in SITES if os.path.isdir(join(source, s))]
    require_nonempty(present, f"site folders {list(SITES)} in {source}")
    cases, train, val = [], [], []
    for site in present:
        site_cases = find_site_cases(join(source, site), site)
        cut = int(0.8 * len(site_cases))
        train += [c for c, _, _ in site_cases[:cut]]
        val += [c for c, _, _ in site_cases[cut:]]
        cases += site_cases
    require_nonempty(cases, f"prostate cases in {source}")
    name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        run_cases(convert_case, [(folder, *c) for c in cases], num_processes, f"converting {name}")
        finish_dataset(folder, name, CHANNELS, LABELS, len(cases),
                       task_entry(NAME, CHANNELS, LABELS, DESCRIPTION, spacing=(3.0, 1.5, 1.5)),
                       f"Multi-site prostate: {DESCRIPTION}", reference=REFERENCE,
                       splits=[{"train": sorted(train), "val": sorted(val)}])
    return name


@console_command
def main(argv=None) -> None:
    args = converter_parser("Convert the multi-site prostate data (six site folders) into nnU-Net raw "
                            f"Dataset{DEFAULT_ID}_{NAME}.", DEFAULT_ID,
                              layout=('the folder with the site folders BIDMC BMC HK I2CVB RUNMC UCL (CaseNN.nii.gz '
                                      '+ CaseNN_segmentation.nii.gz)')).parse_args(argv)
    folder = convert_prostate(args.i, args.d, args.np, args.overwrite)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
