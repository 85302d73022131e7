"""The brain-structure set Hermes uses (T1 MRI with probabilistic grey matter, white matter and CSF masks; DLBS,
SALD and IXI subjects) -> nnU-Net raw Dataset656_BrainStructure.

Expected layout (pass the folder holding train/valid/test as -i)::

    train/image/<name>_img.nii
    train/mask/<name>_probmask_graymatter.nii, <name>_probmask_whitematter.nii, <name>_probmask_csf.nii
    valid/...   test/...

Label = argmax over [background, GM, WM, CSF], background = 1 where all three probabilities are 0 (Hermes' rule):
0 background, 1 grey matter, 2 white matter, 3 CSF. Channel "T1". train -> train, valid -> val (imagesTr),
test -> imagesTs/labelsTs. Case ids brain_<name> (the name keeps the source tag: dlbs, sald, ixi).
"""
from __future__ import annotations

import os
import re

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, check_geometry, converter_parser,
                                                           finish_dataset, listdir_visible, raw_root, read_3d,
                                                           run_cases, staged_dataset, task_entry, with_geometry,
                                                           write_case)

DEFAULT_ID = 656
NAME = "BrainStructure"
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2, "csf": 3}
TISSUES = ("graymatter", "whitematter", "csf")
DESCRIPTION = "T1 brain MRI with grey matter, white matter and CSF (argmax of probabilistic masks)."
_IMAGE = re.compile(r"^(.+)_img\.nii(\.gz)?$")


def convert_subject(folder: str, part_dir: str, name: str, image_file: str, test: bool) -> str:
    case = f"brain_{name}"
    image = read_3d(join(part_dir, "image", image_file), case)
    probs = []
    for tissue in TISSUES:
        path = next((join(part_dir, "mask", f"{name}_probmask_{tissue}{e}") for e in (".nii", ".nii.gz")
                     if os.path.isfile(join(part_dir, "mask", f"{name}_probmask_{tissue}{e}"))), None)
        if path is None:
            raise ConversionError(f"case {case}: {join(part_dir, 'mask', f'{name}_probmask_{tissue}.nii')} is missing")
        mask = read_3d(path, case)
        check_geometry(image, mask, case)
        probs.append(sitk.GetArrayFromImage(mask).astype(np.float32))
    stack = np.stack(probs)
    background = (stack == 0).all(0).astype(np.float32)
    label = np.argmax(np.concatenate((background[None], stack)), 0).astype(np.uint8)
    write_case(folder, case, [image], None if test else with_geometry(label, image), "Ts" if test else "Tr")
    if test:
        os.makedirs(join(folder, "labelsTs"), exist_ok=True)
        sitk.WriteImage(with_geometry(label, image), join(folder, "labelsTs", f"{case}.nii.gz"), True)
    return case


def convert_brain_structure(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1,
                            overwrite: bool = False) -> str:
    if not os.path.isdir(join(source, "train", "image")):
        raise ConversionError(f"{source}: expected train/image/<name>_img.nii")
    jobs, parts = [], {"train": [], "val": []}
    for part, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        part_dir = join(source, part)
        if not os.path.isdir(join(part_dir, "image")):
            continue
        for f in listdir_visible(join(part_dir, "image")):
            match = _IMAGE.match(f)
            if match:
                jobs.append((part_dir, match.group(1), f, split == "test"))
                if split != "test":
                    parts[split].append(f"brain_{match.group(1)}")
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        run_cases(convert_subject, [(folder, *j) for j in jobs], num_processes, "brain structure")
        finish_dataset(folder, f"Dataset{int(dataset_id):03d}_{NAME}", {"0": "T1"}, LABELS,
                       len(parts["train"]) + len(parts["val"]),
                       task_entry(NAME, {"0": "T1"}, LABELS, DESCRIPTION, sampling_weight=0.4),  # Hermes' sampler
                       DESCRIPTION, splits=[{k: sorted(v) for k, v in parts.items()}])
    return f"Dataset{int(dataset_id):03d}_{NAME}"


@console_command
def main(argv=None) -> None:
    parser = converter_parser(f"Convert the brain-structure set into nnU-Net raw Dataset{DEFAULT_ID}_{NAME}.",
                              DEFAULT_ID,
                              layout=('the folder holding train/ valid/ test/, each with image/<name>_img.nii and '
                                      'mask/<name>_probmask_*.nii'))
    args = parser.parse_args(argv)
    print(f"wrote {join(raw_root(), convert_brain_structure(args.i, args.d, args.np, args.overwrite))}")


if __name__ == "__main__":
    main()
