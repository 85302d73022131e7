"""VerSe20 converter on a fake BIDS-like tree: split scans, an empty subject, a CT without mask, a flipped
orientation (image and mask stay aligned), binarised labels, subject-grouped split, --max_slices."""
from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

from fake_sources import read_array, write_image
from nnunetv2_universal.dataset_conversion import verse20

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _scan(root, part, subject, prefix, with_mask=True, direction=None, slices=6):
    ct = np.full((slices, 16, 16), -100, np.int16)
    ct[2, 3, 4] = 1000  # marker in the image ...
    mask = np.zeros((slices, 16, 16), np.uint8)
    mask[2, 3, 4] = 5  # ... and the same voxel in the mask (vertebra label 5)
    mask[3, 8:10, 8:10] = 20
    write_image(os.path.join(root, part, "rawdata", subject, f"{prefix}_ct.nii.gz"), ct, (1.0, 1.0, 2.0),
                (0.0, 0.0, 0.0), direction)
    if with_mask:
        write_image(os.path.join(root, part, "derivatives", subject, f"{prefix}_seg-vert_msk.nii.gz"), mask,
                    (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), direction)


def make_verse(root):
    _scan(root, "dataset-01training", "sub-verse500", "sub-verse500")
    _scan(root, "dataset-01training", "sub-gl003", "sub-gl003", direction=FLIPPED)
    _scan(root, "dataset-02validation", "sub-verse510", "sub-verse510_split-verse291")
    _scan(root, "dataset-02validation", "sub-verse510", "sub-verse510_split-verse292")
    _scan(root, "dataset-03test", "sub-verse520", "sub-verse520", with_mask=False)
    _scan(root, "dataset-03test", "sub-verse530", "sub-verse530")
    _scan(root, "dataset-03test", "sub-verse540", "sub-verse540")
    os.makedirs(os.path.join(root, "dataset-03test", "rawdata", "sub-verse599"))  # empty subject folder
    return root


def test_verse20_conversion(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    verse20.main(["-i", make_verse(str(tmp_path / "src"))])
    out = tmp_path / "raw" / "Dataset608_VerSe20Binary"
    assert sorted(os.listdir(out / "labelsTr")) == sorted(f"{c}.nii.gz" for c in (
        "sub-verse500", "sub-gl003", "sub-verse510_split-verse291", "sub-verse510_split-verse292", "sub-verse530",
        "sub-verse540"))
    for case in ("sub-verse500", "sub-gl003"):  # marker voxel: image and mask stay aligned after reorientation
        img = read_array(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        seg = read_array(str(out / "labelsTr" / f"{case}.nii.gz"))
        assert set(np.unique(seg)) == {0, 1} and seg[img == 1000].tolist() == [1]
        assert np.allclose(sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz")).GetDirection(), np.eye(3).ravel())
    split = json.load(open(out / "splits_final.json"))[0]
    sides = {p for p in ("train", "val") for c in split[p] if c.startswith("sub-verse510")}
    assert len(sides) == 1  # both scans of the split subject on one side
    assert json.load(open(out / "dataset.json"))["universal_task"]["spacing"] == [4.0, 2.0, 2.0]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(out), 1)


def test_verse20_max_slices(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    src = str(tmp_path / "src")
    _scan(src, "dataset-01training", "sub-verse700", "sub-verse700", slices=8)
    _scan(src, "dataset-01training", "sub-verse701", "sub-verse701", slices=8)
    verse20.main(["-i", src, "--max_slices", "4"])
    img = sitk.ReadImage(str(tmp_path / "raw" / "Dataset608_VerSe20Binary" / "labelsTr" / "sub-verse700.nii.gz"))
    assert img.GetSize()[2] == 4 and np.isclose(img.GetSpacing()[2], 4.0)  # 8 x 2 mm -> 4 x 4 mm
