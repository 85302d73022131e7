"""Vestibular-Schwannoma-SEG (TCIA) -> nnU-Net raw Dataset613_VestibularSchwannoma (default id 613).

Source: the NIfTI layout the public preprocessing produces, one folder per patient:
`<root>/vs_gk_<N>/vs_gk_t1_refT1.nii.gz` (contrast-enhanced T1), `vs_gk_seg_refT1.nii.gz` (tumour mask in T1
space), optionally `vs_gk_t2_refT2.nii.gz` (ignored: UniSeg's downstream task uses the contrast T1 only).
Channel {"0": "T1ce"}; label tumour = 1 (mask > 0, so masks stored as 0/255 or 0/1 both work). Case id `vs_<N>`.
Split: one seeded 80/20 fold (the reference: random.seed(1234) 80/20 -> 193 / 49 of 242; ours is our own).
No target spacing in the task entry: downstream fine-tuning uses stock nnU-Net planning.

The DICOM step (done once, before this converter; see docs/how-to/convert-vs-from-dicom.md): download the
Vestibular-Schwannoma-SEG collection from TCIA (DICOM images plus RTSTRUCT contours), reorganise the download into
one folder per patient with the preprocessing tools published with the dataset (VS_Seg), then convert each
patient's contrast T1 series and its tumour RTSTRUCT to NIfTI in T1 space (the tools' export, or 3D Slicer with
SlicerRT: load the series and the RTSTRUCT, export the volume and the segment as a labelmap). The result is the
`vs_gk_<N>/` layout above.
"""
from __future__ import annotations

import os
import re

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, binarize, check_geometry,
                                                           converter_parser, dataset_name, finish_dataset,
                                                           listdir_visible, raw_root, read_3d, reject_options,
                                                           require_nonempty, run_cases, seeded_split,
                                                           staged_dataset, task_entry, write_case)

DEFAULT_ID = 613
NAME = "VestibularSchwannoma"
CHANNELS = {"0": "T1ce"}
LABELS = {"background": 0, "tumour": 1}
DESCRIPTION = "Contrast-enhanced T1 brain MRI with the vestibular schwannoma (acoustic neuroma) segmented."
REFERENCE = ("Shapey et al., Segmentation of vestibular schwannoma from MRI, an open annotated dataset and baseline "
             "algorithm, Scientific Data 8, 286 (2021)")
_PATIENT = re.compile(r"^vs_gk_(\d+)$")


def convert_case(output: str, case: str, patient_folder: str) -> str:
    image = read_3d(join(patient_folder, "vs_gk_t1_refT1.nii.gz"), case)
    mask_path = join(patient_folder, "vs_gk_seg_refT1.nii.gz")
    if not os.path.isfile(mask_path):
        raise ConversionError(f"case {case}: label {mask_path} is missing")
    mask = read_3d(mask_path, case)
    check_geometry(image, mask, case)
    write_case(output, case, [image], binarize(mask))
    return case


def convert_vs(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
               **options) -> str:
    reject_options(options)
    patients = [(f"vs_{int(m[1])}", join(source, d)) for d in listdir_visible(source) if (m := _PATIENT.match(d))]
    patients = require_nonempty(sorted(patients, key=lambda p: int(p[0][3:])), f"vs_gk_<N> folders in {source}")
    train, val = seeded_split([c for c, _ in patients])
    name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        run_cases(convert_case, [(folder, c, p) for c, p in patients], num_processes, f"converting {name}")
        finish_dataset(folder, name, CHANNELS, LABELS, len(patients), task_entry(NAME, CHANNELS, LABELS, DESCRIPTION),
                       f"Vestibular-Schwannoma-SEG: {DESCRIPTION}", reference=REFERENCE,
                       splits=[{"train": train, "val": val}])
    return name


@console_command
def main(argv=None) -> None:
    args = converter_parser("Convert Vestibular-Schwannoma-SEG (vs_gk_<N>/vs_gk_t1_refT1.nii.gz + "
                            "vs_gk_seg_refT1.nii.gz) into nnU-Net raw "
                            f"Dataset{DEFAULT_ID}_{NAME}.", DEFAULT_ID,
                              layout=('the folder holding vs_gk_<N>/ with vs_gk_t1_refT1.nii.gz and '
                                      'vs_gk_seg_refT1.nii.gz')).parse_args(argv)
    folder = convert_vs(args.i, args.d, args.np, args.overwrite)
    print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
