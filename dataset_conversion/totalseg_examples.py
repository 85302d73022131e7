"""TotalSegmentator's test CTs -> two partially labelled real-CT tasks on shared anatomy: Dataset511_RealLiverCT
(liver = 1) and Dataset512_RealSpleenCT (spleen = 1). The data of the real-anatomy benchmark
(benchmarks/real_anatomy.py); every image shows both organs, each task labels one.

Source: the `tests/reference_files/` folder of TotalSegmentator (github.com/wasserth/TotalSegmentator, Apache
License 2.0); nothing is downloaded or shipped, pass the folder as -i. Expected layout (the files used)::

    example_ct_sm.nii.gz       patient A: 122 x 101 x 30, 3 mm, stored with x and y flipped (RAS)
    example_seg.nii.gz         its TotalSegmentator segmentation (same grid)
    example_ct_dicom/CT.<uid>  patient B: a DICOM series, 512 x 512 x 20, 0.98 x 0.98 x 2 mm, identity (LPS)
    example_seg_dicom.nii.gz   its segmentation, stored y-flipped (LAS)

Labels: TotalSegmentator's `total` class ids, spleen 1 and liver 5; they are TotalSegmentator's output (its tests'
expected results), not manual annotations. Cases: `num_train` crops of patient A per task (random margins, up to
30 % air padding in-plane, intensity scale and offset, noise), stored as patient A is (RAS); held out per task
(imagesTs/, labelsTs/ and structuresTs/ with liver 1, spleen 2): one more crop of patient A (`_a_000`, the same
patient) and patient B's series as read from DICOM (`_b_000`, a patient never seen, stored LPS). Patient B's
segmentation is resampled onto the series' grid in world coordinates (nearest neighbour: exact for a flip).
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (CT_CHANNELS, FILE_ENDING, ConversionError, all_or_nothing,
                                                           check_geometry, check_image, converter_parser,
                                                           finish_dataset, raw_root, read_3d, staged_dataset,
                                                           task_entry, write_case)

SOURCE_FILES = {"ct": "example_ct_sm.nii.gz", "seg": "example_seg.nii.gz", "dicom": "example_ct_dicom",
                "dicom_seg": "example_seg_dicom.nii.gz"}
TOTALSEGMENTATOR_LABELS = {"spleen": 1, "liver": 5}  # TotalSegmentator's `total` task class ids
STRUCTURES = {"liver": 1, "spleen": 2}  # values in structuresTs/
SPACING = (3.0, 6.0, 6.0)  # z, y, x: the cpu_demo patch's 32 x 32 in-plane voxels then span 19 cm
TASKS = {"RealLiverCT": "liver", "RealSpleenCT": "spleen"}  # task -> the one structure it labels
AIR_HU = -1024
REFERENCE = "TotalSegmentator tests/reference_files, https://github.com/wasserth/TotalSegmentator"


def description(task: str, source: str = "TotalSegmentator test data") -> str:
    other = next(s for s in STRUCTURES if s != TASKS[task])
    return f"real abdominal CT ({source}); labels the {TASKS[task]}, the {other} is unlabelled"


def _structures(segmentation: sitk.Image) -> sitk.Image:
    labels = sitk.GetArrayFromImage(segmentation)
    out = np.zeros(labels.shape, np.uint8)
    for name, value in STRUCTURES.items():
        out[labels == TOTALSEGMENTATOR_LABELS[name]] = value
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(segmentation)
    return image


def read_patients(source: str) -> Dict[str, Tuple[sitk.Image, sitk.Image]]:
    """{"a": (CT, structure map), "b": (CT read from DICOM, structure map on its grid)}."""
    missing = [f for f in SOURCE_FILES.values() if not os.path.exists(join(source, f))]
    if missing:
        raise ConversionError(f"{source} lacks {', '.join(missing)}: pass TotalSegmentator's tests/reference_files "
                              f"folder (git clone https://github.com/wasserth/TotalSegmentator)")
    ct_a = sitk.Cast(read_3d(join(source, SOURCE_FILES["ct"]), "patient A"), sitk.sitkInt16)
    seg_a = read_3d(join(source, SOURCE_FILES["seg"]), "patient A")
    check_geometry(ct_a, seg_a, "patient A")
    reader = sitk.ImageSeriesReader()
    series_folder = join(source, SOURCE_FILES["dicom"])
    series = reader.GetGDCMSeriesFileNames(series_folder)
    if not series:
        raise ConversionError(f"patient B: no DICOM series in {series_folder}")
    reader.SetFileNames(series)
    try:
        ct_b = reader.Execute()
    except RuntimeError as e:
        raise ConversionError(f"patient B: the DICOM series in {series_folder} cannot be read ({e})") from None
    check_image(ct_b, series_folder, "patient B")
    ct_b = sitk.Cast(ct_b, sitk.sitkInt16)
    seg_b = sitk.Resample(read_3d(join(source, SOURCE_FILES["dicom_seg"]), "patient B"), ct_b, sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0)
    return {"a": (ct_a, _structures(seg_a)), "b": (ct_b, _structures(seg_b))}


def crop_variant(ct: sitk.Image, structures: sitk.Image, rng: np.random.Generator) -> Tuple[sitk.Image, sitk.Image]:
    """A crop of the patient (up to 15 % off each side in-plane, up to 3 slices at each end), padded in-plane with
    up to 30 % air on each side (scanners show far more air around the body than this cropped scan does), with a
    random intensity scale, offset and noise; geometry kept (the origin moves with the crop and the padding)."""
    size = np.array(ct.GetSize())
    margin = lambda fraction, axis: int(rng.integers(0, max(1, int(fraction * size[axis])) + 1))  # noqa: E731
    low = [margin(0.15, 0), margin(0.15, 1), int(rng.integers(0, 4))]
    high = [margin(0.15, 0), margin(0.15, 1), int(rng.integers(0, 4))]
    region = [int(v) for v in size - np.array(low) - np.array(high)]
    pad_low = [margin(0.3, 0), margin(0.3, 1), 0]
    pad_high = [margin(0.3, 0), margin(0.3, 1), 0]
    ct_crop = sitk.ConstantPad(sitk.RegionOfInterest(ct, region, low), pad_low, pad_high, AIR_HU)
    struct_crop = sitk.ConstantPad(sitk.RegionOfInterest(structures, region, low), pad_low, pad_high, 0)
    values = sitk.GetArrayFromImage(ct_crop).astype(np.float32)
    values = values * rng.uniform(0.95, 1.05) + rng.uniform(-20, 20) + rng.normal(0, 10, values.shape)
    out = sitk.GetImageFromArray(np.clip(values, AIR_HU, 3071).astype(np.int16))
    out.CopyInformation(ct_crop)
    return out, struct_crop


def task_label(task: str, structures: sitk.Image) -> sitk.Image:
    label = sitk.GetImageFromArray((sitk.GetArrayFromImage(structures) == STRUCTURES[TASKS[task]]).astype(np.uint8))
    label.CopyInformation(structures)
    return label


def convert_totalseg_examples(source: str, first_id: int = 511, num_train: int = 8, seed: int = 0,
                              overwrite: bool = False) -> List[str]:
    """Write both tasks (ids first_id, first_id + 1), both or neither; returns their dataset names. Each task gets
    `num_train` different crops of patient A."""
    if num_train < 2:
        raise ConversionError(f"--num_train must be at least 2 (a train/validation split), got {num_train}")
    patients = read_patients(source)
    rng = np.random.default_rng(seed)
    names = []
    with all_or_nothing():
        for offset, task in enumerate(TASKS):
            with staged_dataset(first_id + offset, task, overwrite) as folder:
                prefix = task.lower()
                for i in range(num_train):
                    ct, structures = crop_variant(*patients["a"], rng)
                    write_case(folder, f"{prefix}_{i:03d}", [ct], task_label(task, structures))
                for sub in ("labelsTs", "structuresTs"):
                    os.makedirs(join(folder, sub))
                held_out = {"a_000": crop_variant(*patients["a"], rng), "b_000": patients["b"]}
                for case, (ct, structures) in held_out.items():
                    write_case(folder, f"{prefix}_{case}", [ct], None, split="Ts")
                    sitk.WriteImage(task_label(task, structures), join(folder, "labelsTs", f"{prefix}_{case}"
                                                                        f"{FILE_ENDING}"), True)
                    sitk.WriteImage(structures, join(folder, "structuresTs", f"{prefix}_{case}{FILE_ENDING}"), True)
                labels = {"background": 0, TASKS[task]: 1}
                finish_dataset(folder, task, CT_CHANNELS, labels, num_train,
                               task_entry(task, CT_CHANNELS, labels, description(task), spacing=SPACING),
                               description(task), reference=REFERENCE, license="Apache-2.0 (TotalSegmentator)")
            names.append(f"Dataset{first_id + offset:03d}_{task}")
    return names


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert TotalSegmentator's test CTs into two partially labelled real-CT tasks "
                              "(liver, spleen) for the real-anatomy benchmark: datasets 511 and 512.", 511,
                              layout="TotalSegmentator's tests/reference_files folder (example_ct_sm.nii.gz, "
                                     "example_seg.nii.gz, example_ct_dicom/, example_seg_dicom.nii.gz)")
    parser.add_argument("--num_train", type=int, default=8, help="training crops per task (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops (default 0)")
    args = parser.parse_args(argv)
    for name in convert_totalseg_examples(args.i, args.d, args.num_train, args.seed, args.overwrite):
        print(f"wrote {join(raw_root(), name)}")


if __name__ == "__main__":
    main()
