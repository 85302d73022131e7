"""Real abdominal CT with partial labels, from TotalSegmentator's test files, for the real-anatomy benchmark.

Source: the `tests/reference_files/` folder of TotalSegmentator (github.com/wasserth/TotalSegmentator, Apache
License 2.0); nothing is downloaded or shipped, the user names the folder (`--source`). Used:
- patient A: `example_ct_sm.nii.gz` (122 x 101 x 30 voxels, 3 mm, stored with x and y flipped: RAS) and its
  TotalSegmentator segmentation `example_seg.nii.gz`;
- patient B: the DICOM series `example_ct_dicom/` (512 x 512 x 20, 0.98 x 0.98 x 2 mm, identity direction: LPS)
  and `example_seg_dicom.nii.gz` (its segmentation, stored y-flipped; resampled onto the series' grid in world
  coordinates, nearest neighbour, which is exact for a flip).
The segmentations are TotalSegmentator's own output (its tests' expected results), not manual annotations.

Two member datasets on the same images, each labelling one structure (partial labels): RealLiverCT (liver = 1) and
RealSpleenCT (spleen = 1). Every image shows both organs. Training cases are crops of patient A (random margins,
air padding, intensity scale and offset, noise), as stored (RAS); held-out cases per task: one more crop of patient A (same
patient, `_a_`) and patient B's series as read from DICOM (`_b_`, a patient the network never saw, stored LPS).
structuresTs/ holds liver = 1, spleen = 2 for the cross-activation.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunetv2_universal.demo.partial_labels import PartialLabelTask

SOURCE_FILES = {"ct": "example_ct_sm.nii.gz", "seg": "example_seg.nii.gz", "dicom": "example_ct_dicom",
                "dicom_seg": "example_seg_dicom.nii.gz"}
TOTALSEGMENTATOR_LABELS = {"spleen": 1, "liver": 5}  # TotalSegmentator's `total` task class ids
STRUCTURES = {"liver": 1, "spleen": 2}
SPACING = (3.0, 6.0, 6.0)  # z, y, x: the 32 x 32 in-plane patch then spans 19 cm, enough to tell left from right
REAL_TASKS = (
    PartialLabelTask("RealLiverCT", {"0": "CT"}, {"background": 0, "liver": 1}, STRUCTURES, {"liver": "liver"},
                     "real abdominal CT (TotalSegmentator test data); labels the liver, the spleen is unlabelled"),
    PartialLabelTask("RealSpleenCT", {"0": "CT"}, {"background": 0, "spleen": 1}, STRUCTURES, {"spleen": "spleen"},
                     "real abdominal CT (TotalSegmentator test data); labels the spleen, the liver is unlabelled"),
)


def _structures(segmentation: sitk.Image) -> sitk.Image:
    labels = sitk.GetArrayFromImage(segmentation)
    out = np.zeros(labels.shape, np.uint8)
    for name, value in STRUCTURES.items():
        out[labels == TOTALSEGMENTATOR_LABELS[name]] = value
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(segmentation)
    return image


def read_patients(source: str) -> Dict[str, Tuple[sitk.Image, sitk.Image]]:
    """{"a": (CT, structure map), "b": (CT read from DICOM, structure map on its grid)}; errors name what is
    missing."""
    missing = [f for f in SOURCE_FILES.values() if not os.path.exists(join(source, f))]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: pass TotalSegmentator's tests/reference_files "
                                f"folder (git clone https://github.com/wasserth/TotalSegmentator)")
    ct_a = sitk.ReadImage(join(source, SOURCE_FILES["ct"]), sitk.sitkInt16)
    seg_a = sitk.ReadImage(join(source, SOURCE_FILES["seg"]))
    if ct_a.GetSize() != seg_a.GetSize():
        raise ValueError(f"{SOURCE_FILES['ct']} {ct_a.GetSize()} and {SOURCE_FILES['seg']} {seg_a.GetSize()} differ")
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesFileNames(join(source, SOURCE_FILES["dicom"]))
    if not series:
        raise FileNotFoundError(f"no DICOM series in {join(source, SOURCE_FILES['dicom'])}")
    reader.SetFileNames(series)
    ct_b = sitk.Cast(reader.Execute(), sitk.sitkInt16)
    seg_b = sitk.Resample(sitk.ReadImage(join(source, SOURCE_FILES["dicom_seg"])), ct_b, sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0)
    return {"a": (ct_a, _structures(seg_a)), "b": (ct_b, _structures(seg_b))}


AIR_HU = -1024


def _variant(ct: sitk.Image, structures: sitk.Image, rng: np.random.Generator) -> Tuple[sitk.Image, sitk.Image]:
    """A crop of the patient (up to 15 % off each side in-plane, up to 3 slices at each end), padded in-plane with
    up to 30 % air on each side (scanners show far more air around the body than this cropped scan does), with a
    random intensity scale, offset and noise; geometry kept (origin moves with the crop and the padding)."""
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


def _label_image(task: PartialLabelTask, structures: sitk.Image) -> sitk.Image:
    label = sitk.GetImageFromArray(task.label_map(sitk.GetArrayFromImage(structures)))
    label.CopyInformation(structures)
    return label


def make_real_ct_datasets(raw_root: str, source: str, first_id: int = 501, num_train: int = 8,
                          seed: int = 0) -> List[str]:
    """Write RealLiverCT and RealSpleenCT (ids first_id, first_id + 1) to raw_root; returns their dataset names.
    Each task gets `num_train` different training crops of patient A (the two tasks different ones)."""
    patients = read_patients(source)
    rng = np.random.default_rng(seed)
    names = []
    for offset, task in enumerate(REAL_TASKS):
        name = f"Dataset{first_id + offset:03d}_{task.name}"
        staging = tempfile.mkdtemp(prefix=f".{name}.", dir=raw_root)
        try:
            for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "structuresTs"):
                maybe_mkdir_p(join(staging, sub))
            prefix = task.name.lower()
            for i in range(num_train):
                ct, structures = _variant(*patients["a"], rng)
                sitk.WriteImage(ct, join(staging, "imagesTr", f"{prefix}_{i:03d}_0000.nii.gz"), True)
                sitk.WriteImage(_label_image(task, structures), join(staging, "labelsTr", f"{prefix}_{i:03d}.nii.gz"),
                                True)
            held_out = {"a_000": _variant(*patients["a"], rng), "b_000": patients["b"]}
            for case, (ct, structures) in held_out.items():
                sitk.WriteImage(ct, join(staging, "imagesTs", f"{prefix}_{case}_0000.nii.gz"), True)
                sitk.WriteImage(_label_image(task, structures), join(staging, "labelsTs", f"{prefix}_{case}.nii.gz"),
                                True)
                sitk.WriteImage(structures, join(staging, "structuresTs", f"{prefix}_{case}.nii.gz"), True)
            generate_dataset_json(staging, task.channels, task.labels, num_train, ".nii.gz", dataset_name=name,
                                  description=task.description, reference="TotalSegmentator tests/reference_files",
                                  license="Apache-2.0 (TotalSegmentator)",
                                  universal_task={"name": task.name, "channels": task.channels,
                                                  "labels": task.labels, "spacing": list(SPACING),
                                                  "description": task.description})
            target = join(raw_root, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            if os.path.isdir(staging):
                shutil.rmtree(staging)
        names.append(name)
    return names


def patient_of(case: str) -> str:
    """'a' (the training patient) or 'b' (the second patient) for a held-out case id."""
    return "b" if "_b_" in case else "a"
