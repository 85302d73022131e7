"""Checks on input images that nnU-Net would otherwise get silently wrong; shared by the converters, the training-data
checks before planning and prediction.

- A non-orthonormal direction: ITK's NIfTI reader refuses it, but MHD/NRRD/DICOM readers pass it on and nnU-Net's
  resampling assumes a rotation.
- NaN/inf intensities: ITK's NIfTI reader turns them into 0 without a word, other readers keep them and nnU-Net's
  normalisation then spreads NaN over the whole image. A NIfTI file stored as float is therefore read with nibabel.
- A file that is not one scalar volume (a 4D series, an RGB or vector image): nnU-Net's reader takes the extra axis
  for channels, in the wrong place for vectors.
- Files that nnU-Net stacks voxel by voxel (a case's channels, an image and its label) on different grids: nnU-Net
  compares sizes and, at most, warns about the rest, so a label stored in another orientation trains flipped (the
  plugin's reorienting reader would align it if it is right in world space, not if its header is wrong; the files
  cannot tell which).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

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
GRID_TOLERANCE = 1e-3  # relative and absolute (mm): header rounding between tools, far below half a voxel


def volume_problem(image) -> Optional[str]:
    """Why `image` (a sitk.Image or an ImageFileReader after ReadImageInformation) is not one scalar volume, or
    None."""
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] > 1:
        return f"holds {size[3]} volumes (4D, size {list(size)})"
    components = (image.GetNumberOfComponentsPerPixel() if isinstance(image, sitk.Image)
                  else image.GetNumberOfComponents())
    if components > 1:
        return f"has {components} values per voxel (an RGB or vector image)"
    return None


def _rounded(values: Sequence[float]) -> tuple:
    return tuple(round(float(v), 4) + 0.0 for v in values)  # + 0.0: no -0.0


def grid_differences(a, b, tolerance: float = GRID_TOLERANCE) -> List[Tuple[str, tuple, tuple]]:
    """(property, a's value, b's value) for every property of the voxel grid (size, spacing, origin, direction) in
    which `a` and `b` (sitk.Images or ImageFileReaders) differ."""
    if a.GetSize() != b.GetSize():
        return [("size", tuple(a.GetSize()), tuple(b.GetSize()))]
    differences = []
    for name in ("spacing", "origin", "direction"):
        va, vb = (getattr(x, "Get" + name.capitalize())() for x in (a, b))
        if not np.allclose(va, vb, atol=tolerance, rtol=tolerance):
            differences.append((name, _rounded(va), _rounded(vb)))
    return differences


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
