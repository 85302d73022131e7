"""Helpers for converter tests: tiny images written in the layouts the public datasets use."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk


def write_image(path: str, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 2.5),
                origin: Sequence[float] = (0.0, 0.0, 0.0), direction: Optional[Sequence[float]] = None,
                compress: bool = True) -> str:
    """Write array (z, y, x) [or (t, z, y, x) for 4D] with SimpleITK; spacing/origin in SimpleITK order (x, y, z).

    The file format follows the extension (.nii, .nii.gz, .mha, .nrrd); parent folders are created."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = sitk.GetImageFromArray(array, isVector=False)
    dim = image.GetDimension()
    image.SetSpacing(tuple(spacing) + (1.0,) * (dim - len(spacing)))
    image.SetOrigin(tuple(origin) + (0.0,) * (dim - len(origin)))
    if direction is not None:
        image.SetDirection(tuple(direction))
    sitk.WriteImage(image, path, compress)
    return path


def read_array(path: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def blob_label(shape=(6, 16, 16), values=(1, 2), seed: int = 0) -> np.ndarray:
    """A label volume holding each value in `values` as a small box (deterministic)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        z = rng.integers(0, max(1, shape[0] - 2))
        y = 2 + 4 * i % max(1, shape[1] - 4)
        label[z:z + 2, y:y + 3, 3:7] = v
    return label


def ct_volume(shape=(6, 16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 200, shape).astype(np.int16)


def set_raw(monkeypatch, root):
    """Point nnU-Net's three path variables into `root`; returns nnUNet_raw."""
    for d in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{d}", str(root / d))
    return str(root / "raw")


def write_like(array: np.ndarray, reference: sitk.Image, path: str, vector: bool = False) -> None:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.CopyInformation(reference)
    sitk.WriteImage(image, path)


def damage_image(path: str, how: str) -> None:
    """Damage an image file in place: "unreadable" (random bytes), "nan" (one NaN voxel, float32),
    "non_orthonormal" (the second voxel axis sheared towards the first), "channels" (3D -> 2 channels, 4D -> its
    first frame/channel only, 3D)."""
    if how == "unreadable":
        with open(path, "wb") as f:
            f.write(os.urandom(300))
        return
    image = sitk.ReadImage(path)
    array = sitk.GetArrayFromImage(image)
    vector = image.GetNumberOfComponentsPerPixel() > 1
    if how == "nan":
        array = array.astype(np.float32)
        array.flat[array.size // 2] = np.nan
        write_like(array, image, path, vector)
    elif how == "non_orthonormal":
        if path.endswith((".nii", ".nii.gz")):  # nibabel writes the sheared affine as the file's sform
            nifti = nib.load(path)
            affine = nifti.affine.copy()
            affine[:3, 1] += 0.5 * affine[:3, 0]  # the second voxel axis leans towards the first
            nib.Nifti1Image(np.asanyarray(nifti.dataobj), affine).to_filename(path)
        else:
            dim = image.GetDimension()
            direction = np.array(image.GetDirection()).reshape(dim, dim)
            direction[:, 1] += 0.5 * direction[:, 0]
            image.SetDirection(direction.ravel().tolist())
            sitk.WriteImage(image, path)
    elif how == "channels":
        if image.GetDimension() == 4:  # a 4D cine or multi-channel volume keeps only its first frame/channel
            size = list(image.GetSize())
            sitk.WriteImage(sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0]), path)
        else:  # a 3D volume gains a second channel
            sitk.WriteImage(sitk.JoinSeries([image, image]), path)
