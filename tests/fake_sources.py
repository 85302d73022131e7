"""Helpers for converter tests: tiny images written in the layouts the public datasets use."""
from __future__ import annotations

import os
from typing import Optional, Sequence

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
