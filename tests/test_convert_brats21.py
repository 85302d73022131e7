"""BraTS21 converter on a fake BraTS2021_Training_Data tree: channel order, label remap 2/1/4 -> 1/2/3, geometry,
dataset.json, split, nnU-Net's integrity check; an unexpected label value names the case."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from fake_sources import read_array, write_image
from nnunetv2_universal.dataset_conversion import brats21
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

OFFSETS = {"t1": 100, "t1ce": 200, "t2": 300, "flair": 400}
SPACING, ORIGIN = (1.0, 1.0, 1.0), (-120.0, -120.0, 0.0)


def make_brats(root, n=3, bad_value=None):
    data = os.path.join(root, "BraTS2021_Training_Data")
    for i in range(n):
        case = f"BraTS2021_{i:05d}"
        seg = np.zeros((6, 16, 16), np.uint8)
        seg[1:3, 2:6, 2:6] = 2
        seg[3, 4:6, 4:6] = 1
        seg[4, 8:10, 8:10] = 4
        if bad_value is not None and i == 1:
            seg[5, 0, 0] = bad_value
        for m, off in OFFSETS.items():
            write_image(os.path.join(data, case, f"{case}_{m}.nii.gz"),
                        np.full((6, 16, 16), off + i, np.float32), SPACING, ORIGIN)
        write_image(os.path.join(data, case, f"{case}_seg.nii.gz"), seg, SPACING, ORIGIN)
    return root


@pytest.fixture
def raw(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    return tmp_path / "raw"


def test_brats21_conversion(tmp_path, raw):
    brats21.main(["-i", make_brats(str(tmp_path / "src"))])
    out = raw / "Dataset610_BraTS21"
    for c, m in enumerate(("t1", "t1ce", "t2", "flair")):  # channel order
        assert np.all(read_array(str(out / "imagesTr" / f"BraTS2021_00001_{c:04d}.nii.gz")) == OFFSETS[m] + 1)
    seg = read_array(str(out / "labelsTr" / "BraTS2021_00001.nii.gz"))
    assert seg[1, 3, 3] == 1 and seg[3, 5, 5] == 2 and seg[4, 9, 9] == 3 and set(np.unique(seg)) == {0, 1, 2, 3}
    img = sitk.ReadImage(str(out / "labelsTr" / "BraTS2021_00001.nii.gz"))
    assert img.GetSpacing() == SPACING and img.GetOrigin() == ORIGIN
    dj = json.load(open(out / "dataset.json"))
    assert dj["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"} and dj["numTraining"] == 3
    assert dj["labels"] == brats21.LABELS and dj["universal_task"]["spacing"] == [1.0, 1.0, 1.0]
    split = json.load(open(out / "splits_final.json"))
    assert len(split) == 1 and sorted(split[0]["train"] + split[0]["val"]) == [f"BraTS2021_{i:05d}" for i in range(3)]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(out), 1)


def test_brats21_rejects_unexpected_label(tmp_path, raw):
    with pytest.raises(ConversionError, match="BraTS2021_00001.*unexpected label values \\[3\\]"):
        brats21.main(["-i", make_brats(str(tmp_path / "src"), bad_value=3)])
    assert not os.path.exists(raw / "Dataset610_BraTS21")
    assert not [d for d in os.listdir(raw) if d.startswith(".staging")]
