"""Checks on input images that nnU-Net would otherwise get silently wrong; shared by the converters, the training-data
checks before planning and prediction.

- A non-orthonormal direction: ITK's NIfTI reader refuses it, but MHD/NRRD/DICOM readers pass it on and nnU-Net's
  resampling assumes a rotation.
- NaN/inf intensities: ITK's NIfTI reader turns them into 0 without a word, other readers keep them and nnU-Net's
  normalisation then spreads NaN over the whole image. A NIfTI file stored as float is therefore read with nibabel.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk

_FLOAT_IDS = (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64)


def stored_as_float(pixel_id: int) -> bool:
    return pixel_id in _FLOAT_IDS


def count_non_finite(image: Optional[sitk.Image], path: str, pixel_id: Optional[int] = None) -> int:
    """NaN/inf voxels of the file at `path` as stored (`image`: already read by SimpleITK, or None to read here;
    `pixel_id`: SimpleITK's pixel type when `image` is None)."""
    if not stored_as_float(image.GetPixelID() if image is not None else pixel_id):
        return 0
    if os.path.isfile(path) and path.endswith((".nii", ".nii.gz")):
        nifti = nib.load(path)
        if not np.issubdtype(nifti.get_data_dtype(), np.floating):
            return 0
        array = np.asanyarray(nifti.dataobj)
    else:
        image = image if image is not None else sitk.ReadImage(path)  # the view needs the image alive
        array = sitk.GetArrayViewFromImage(image)
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def direction_problem(direction: Sequence[float], dim: int) -> Optional[str]:
    matrix = np.array(direction).reshape(dim, dim)
    if not np.allclose(matrix @ matrix.T, np.eye(dim), atol=1e-4):
        return (f"has a non-orthonormal direction matrix {np.round(matrix, 4).tolist()}; resample it onto an "
                f"orthonormal grid first")
    return None


NON_FINITE_ADVICE = "replace them (e.g. by the background value) first"


def image_problem(image: sitk.Image, path: str) -> Optional[str]:
    """What is wrong with `image` (read from `path`), or None."""
    problem = direction_problem(image.GetDirection(), image.GetDimension())
    if problem:
        return problem
    bad = count_non_finite(image, path)
    if bad:
        return f"has {bad} NaN or infinite voxel(s); {NON_FINITE_ADVICE}"
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


def read_header(path: str, case: str, error: type = ValueError) -> sitk.ImageFileReader:
    """The file's header only (size, spacing, direction, pixel type), without reading its voxels."""
    if not os.path.isfile(path):
        raise error(f"case {case}: file {path} is missing")
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise error(f"case {case}: cannot read {path}: {str(e).strip().splitlines()[-1]}") from None
    return reader
