"""Checks on input images that nnU-Net would otherwise get silently wrong; shared by the converters and prediction.

- A non-orthonormal direction: ITK's NIfTI reader refuses it, but MHD/NRRD/DICOM readers pass it on and nnU-Net's
  resampling assumes a rotation.
- NaN/inf intensities: ITK's NIfTI reader turns them into 0 without a word, other readers keep them and nnU-Net's
  normalisation then spreads NaN over the whole image. A NIfTI file stored as float is therefore read with nibabel.
"""
from __future__ import annotations

import os
from typing import Optional

import nibabel as nib
import numpy as np
import SimpleITK as sitk

_FLOAT_IDS = (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64)


def count_non_finite(image: sitk.Image, path: str) -> int:
    """NaN/inf voxels of `image` (read from `path`) as stored in the file."""
    if image.GetPixelID() not in _FLOAT_IDS:
        return 0
    if os.path.isfile(path) and path.endswith((".nii", ".nii.gz")):
        nifti = nib.load(path)
        if not np.issubdtype(nifti.get_data_dtype(), np.floating):
            return 0
        array = np.asanyarray(nifti.dataobj)
    else:
        array = sitk.GetArrayViewFromImage(image)
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def image_problem(image: sitk.Image, path: str) -> Optional[str]:
    """What is wrong with `image` (read from `path`), or None."""
    dim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(dim, dim)
    if not np.allclose(direction @ direction.T, np.eye(dim), atol=1e-4):
        return (f"has a non-orthonormal direction matrix {np.round(direction, 4).tolist()}; resample it onto an "
                f"orthonormal grid first")
    bad = count_non_finite(image, path)
    if bad:
        return f"has {bad} NaN or infinite voxel(s); replace them (e.g. by the background value) first"
    return None


def read_checked(path: str, case: str, error: type = ValueError) -> sitk.Image:
    """sitk.ReadImage with the checks above; problems raise `error` naming the case and the file."""
    if not os.path.isfile(path):
        raise error(f"case {case}: file {path} is missing")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise error(f"case {case}: cannot read {path}: {str(e).strip().splitlines()[-1]}") from None
    problem = image_problem(image, path)
    if problem:
        raise error(f"case {case}: {path} {problem}")
    return image
