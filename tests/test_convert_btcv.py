"""BTCV converter (Dataset612_BTCV): RawData/Training/{img,label}, RawData/Testing/img, 13 organs, ids bcv_<int>,
UniSeg's fixed split (train bcv_1..10 + bcv_21..31, val bcv_32..40) or the seeded fallback."""
from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

from fake_sources import ct_volume, set_raw, write_image
from nnunetv2_universal.dataset_conversion import btcv
from nnunetv2_universal.dataset_conversion.toolkit import seeded_split

SHAPE = (6, 16, 16)
TRAIN_NUMBERS = [1, 2, 10, 21, 31, 32, 40]
TEST_NUMBERS = [61, 62]
ORGANS = {"background": 0, "spleen": 1, "right_kidney": 2, "left_kidney": 3, "gallbladder": 4, "esophagus": 5,
          "liver": 6, "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_and_splenic_vein": 10,
          "pancreas": 11, "right_adrenal_gland": 12, "left_adrenal_gland": 13}


def organ_label(n):
    """All 13 organs for case 1, organs 1..6 for the others, each a distinct 1x1x4 bar at (v % 6, v + 1)."""
    label = np.zeros(SHAPE, np.uint8)
    for v in range(1, 14 if n == 1 else 7):
        label[v % 6, v + 1, 2 + n % 5:6 + n % 5] = v
    return label


def image_array(n):
    return (ct_volume(SHAPE, seed=n) + 1000 * (n % 3)).astype(np.int16)


def make_btcv(root, numbers=TRAIN_NUMBERS, tests=TEST_NUMBERS):
    raw = os.path.join(root, "RawData")
    for n in numbers:
        spacing = (0.75 + 0.01 * n, 0.75 + 0.01 * n, 3.0 if n != 21 else 2.5)
        origin = (-200.0 + n, -150.0, 20.0 * n)
        direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1) if n == 2 else None
        write_image(os.path.join(raw, "Training", "img", f"img{n:04d}.nii.gz"), image_array(n), spacing, origin,
                    direction)
        write_image(os.path.join(raw, "Training", "label", f"label{n:04d}.nii.gz"), organ_label(n), spacing,
                    origin, direction)
    for n in tests:
        write_image(os.path.join(raw, "Testing", "img", f"img{n:04d}.nii.gz"), image_array(n), (0.8, 0.8, 3.0))
    with open(os.path.join(raw, "Training", "img", "._img0001.nii.gz"), "wb") as f:
        f.write(b"junk")
    return raw



def test_btcv_conversion(tmp_path, monkeypatch, capsys):
    source = make_btcv(tmp_path / "download")
    raw = set_raw(monkeypatch, tmp_path)
    btcv.main(["-i", os.path.dirname(source)])  # the parent of RawData
    folder = os.path.join(raw, "Dataset612_BTCV")
    assert os.listdir(raw) == ["Dataset612_BTCV"]
    assert "seeded" not in capsys.readouterr().out
    ids = [f"bcv_{n}" for n in TRAIN_NUMBERS]
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == sorted(f"{i}_0000.nii.gz" for i in ids)
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == sorted(f"{i}.nii.gz" for i in ids)
    assert sorted(os.listdir(os.path.join(folder, "imagesTs"))) == ["bcv_61_0000.nii.gz", "bcv_62_0000.nii.gz"]

    for n in TRAIN_NUMBERS:
        src = sitk.ReadImage(os.path.join(source, "Training", "img", f"img{n:04d}.nii.gz"))
        image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"bcv_{n}_0000.nii.gz"))
        label = sitk.ReadImage(os.path.join(folder, "labelsTr", f"bcv_{n}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), image_array(n))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), organ_label(n))
        for o in (image, label):
            assert np.allclose(o.GetSpacing(), src.GetSpacing()) and np.allclose(o.GetOrigin(), src.GetOrigin())
            assert np.allclose(o.GetDirection(), src.GetDirection())
    label1 = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", "bcv_1.nii.gz")))
    assert sorted(np.unique(label1).tolist()) == list(range(14))
    assert [tuple(p) for p in np.argwhere(label1 == 13)] == [(1, 14, x) for x in range(3, 7)]  # left adrenal
    test_image = sitk.ReadImage(os.path.join(folder, "imagesTs", "bcv_62_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(test_image), image_array(62))

    with open(os.path.join(folder, "dataset.json")) as f:
        ds = json.load(f)
    assert ds["channel_names"] == {"0": "CT"} and ds["labels"] == ORGANS and ds["numTraining"] == 7
    assert ds["universal_task"] == {"name": "BTCV", "channels": {"0": "CT"}, "labels": ORGANS,
                                    "description": btcv.DESCRIPTION,  # no spacing: stock planning downstream
                                    "sampling_weight": 1.5}  # Hermes' reference sampler
    with open(os.path.join(folder, "splits_final.json")) as f:
        splits = json.load(f)
    assert splits == [{"train": ["bcv_1", "bcv_2", "bcv_10", "bcv_21", "bcv_31"], "val": ["bcv_32", "bcv_40"]}]

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def test_btcv_fixed_split_content():
    all_ids = [f"bcv_{n}" for n in list(range(1, 11)) + list(range(21, 41))]
    (fold,), fixed = btcv.make_splits(all_ids)
    assert fixed
    assert fold["train"] == [f"bcv_{n}" for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 21, 22, 23, 24, 25, 26, 27, 28,
                                                   29, 30, 31]]
    assert fold["val"] == [f"bcv_{n}" for n in range(32, 41)]
    # a case outside UniSeg's split -> seeded fallback over all cases
    (fold,), fixed = btcv.make_splits(all_ids + ["bcv_41"])
    assert not fixed
    train, val = seeded_split(all_ids + ["bcv_41"])
    assert set(fold["train"]) == set(train) and set(fold["val"]) == set(val) and len(val) == 6


def test_btcv_fallback_split_when_val_is_empty(tmp_path, monkeypatch, capsys):
    source = make_btcv(tmp_path / "download", numbers=[1, 2, 3, 4, 5], tests=[])
    raw = set_raw(monkeypatch, tmp_path)
    btcv.main(["-i", source])
    assert "seeded 80/20 split instead (4 / 1)" in capsys.readouterr().out
    folder = os.path.join(raw, "Dataset612_BTCV")
    with open(os.path.join(folder, "splits_final.json")) as f:
        (fold,) = json.load(f)
    train, val = seeded_split([f"bcv_{n}" for n in range(1, 6)])
    assert set(fold["train"]) == set(train) and set(fold["val"]) == set(val) and len(fold["val"]) == 1
    assert os.listdir(os.path.join(folder, "imagesTs")) == []
