"""KiTS19 converter (Dataset602_KiTS19): kits19/data/case_XXXXX layout with the slice-axis-first KiTS geometry,
unlabelled test cases skipped, ids kidney_<int>, a leak-free seeded split."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from fake_sources import blob_label, ct_volume, set_raw, write_image
from nnunetv2_universal.dataset_conversion import kits19
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError, seeded_split

# KiTS19 stores (num_slices, height, width) in NIfTI order: SimpleITK axis 0 is the slice axis (5 mm here), the
# direction is a permutation (RAS affine [[0,0,-.78],[0,-.78,0],[-5,0,0]] -> LPS direction below).
KITS_DIRECTION = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)
KITS_SPACING = (5.0, 0.78, 0.78)
ARRAY_SHAPE = (16, 16, 6)  # numpy (z, y, x) = SimpleITK size (6, 16, 16): 6 slices along SimpleITK axis 0
LABELLED = [0, 1, 2, 3, 4, 5]


def _values(n):
    return (1,) if n == 3 else (1, 2)


def _arrays(n):
    return ((ct_volume(ARRAY_SHAPE, seed=n) + 10 * n).astype(np.int16),
            blob_label(ARRAY_SHAPE, _values(n), seed=n))


def make_kits(root):
    data = os.path.join(root, "kits19", "data")
    for n in LABELLED:
        image, label = _arrays(n)
        spacing = (3.0, 0.9, 0.9) if n == 4 else KITS_SPACING
        origin = (0.0, 0.0, 0.0) if n != 2 else (-12.5, 4.0, 7.0)
        write_image(os.path.join(data, f"case_{n:05d}", "imaging.nii.gz"), image, spacing, origin, KITS_DIRECTION)
        write_image(os.path.join(data, f"case_{n:05d}", "segmentation.nii.gz"), label, spacing, origin,
                    KITS_DIRECTION)
    # a test case: imaging only
    write_image(os.path.join(data, "case_00210", "imaging.nii.gz"), ct_volume(ARRAY_SHAPE, seed=210),
                KITS_SPACING, direction=KITS_DIRECTION)
    with open(os.path.join(data, "kits.json"), "w") as f:
        json.dump([{"case_id": f"case_{n:05d}"} for n in LABELLED], f)
    return os.path.join(root, "kits19")



def test_kits19_conversion(tmp_path, monkeypatch, capsys):
    source = make_kits(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    kits19.main(["-i", source, "--keep_axes"])  # the kits19 clone (parent of data/)
    out = capsys.readouterr().out
    assert "skipping 1 case folder" in out
    folder = os.path.join(raw, "Dataset602_KiTS19")
    assert os.listdir(raw) == ["Dataset602_KiTS19"]
    ids = [f"kidney_{n}" for n in LABELLED]
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == sorted(f"{i}_0000.nii.gz" for i in ids)
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == sorted(f"{i}.nii.gz" for i in ids)
    assert os.listdir(os.path.join(folder, "imagesTs")) == []

    for n in LABELLED:
        src = sitk.ReadImage(os.path.join(source, "data", f"case_{n:05d}", "imaging.nii.gz"))
        image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"kidney_{n}_0000.nii.gz"))
        label = sitk.ReadImage(os.path.join(folder, "labelsTr", f"kidney_{n}.nii.gz"))
        expected_image, expected_label = _arrays(n)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected_image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected_label)
        assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) == {0, *_values(n)}
        for o in (image, label):  # the odd direction matrix and the slice-first spacing are kept
            assert np.allclose(o.GetDirection(), KITS_DIRECTION)
            assert np.allclose(o.GetSpacing(), src.GetSpacing()) and np.allclose(o.GetOrigin(), src.GetOrigin())
    assert np.allclose(sitk.ReadImage(os.path.join(folder, "imagesTr", "kidney_2_0000.nii.gz")).GetOrigin(),
                       (-12.5, 4.0, 7.0))
    label0 = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", "kidney_0.nii.gz")))
    assert np.array_equal(np.argwhere(label0 == 1), np.argwhere(blob_label(ARRAY_SHAPE, (1, 2), seed=0) == 1))

    with open(os.path.join(folder, "dataset.json")) as f:
        ds = json.load(f)
    assert ds["channel_names"] == {"0": "CT"}
    assert ds["labels"] == {"background": 0, "kidney": 1, "tumour": 2}
    assert ds["numTraining"] == 6
    assert ds["universal_task"] == {"name": "KiTS19", "channels": {"0": "CT"}, "labels": ds["labels"],
                                    "description": kits19.DESCRIPTION, "spacing": [3.0, 1.5, 1.5],
                                    "sampling_weight": 0.3}

    with open(os.path.join(folder, "splits_final.json")) as f:
        splits = json.load(f)
    assert len(splits) == 1
    train, val = splits[0]["train"], splits[0]["val"]
    assert not set(train) & set(val)  # no leak (the reference had kidney_1/kidney_2 in both)
    assert sorted(train + val) == sorted(ids) and len(train) == 5 and len(val) == 1
    for case in ("kidney_1", "kidney_2"):
        assert (case in train) != (case in val)
    expected_train, expected_val = seeded_split(ids, 0.8, 1234)
    assert set(train) == set(expected_train) and set(val) == set(expected_val)

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def test_kits19_reorder_axes_is_lossless(tmp_path, monkeypatch):
    source = make_kits(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    kits19.main(["-i", os.path.join(source, "data"), "-d", "622"])
    folder = os.path.join(raw, "Dataset622_KiTS19")
    for n in (0, 4):
        src = sitk.ReadImage(os.path.join(source, "data", f"case_{n:05d}", "imaging.nii.gz"))
        src_label = sitk.ReadImage(os.path.join(source, "data", f"case_{n:05d}", "segmentation.nii.gz"))
        image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"kidney_{n}_0000.nii.gz"))
        label = sitk.ReadImage(os.path.join(folder, "labelsTr", f"kidney_{n}.nii.gz"))
        # slice axis (largest spacing) is now SimpleITK axis 2 = first nnU-Net array axis
        assert np.allclose(image.GetSpacing(), src.GetSpacing()[1:] + src.GetSpacing()[:1])
        assert sitk.GetArrayFromImage(image).shape == (6, 16, 16)
        assert label.GetSize() == image.GetSize() and np.allclose(label.GetDirection(), image.GetDirection())
        # every voxel keeps its physical position and value
        for index in [(0, 0, 0), (5, 15, 15), (2, 7, 11), (4, 3, 9)]:
            point = src.TransformIndexToPhysicalPoint(index)
            moved = image.TransformPhysicalPointToIndex(point)
            assert np.allclose(image.TransformIndexToPhysicalPoint(moved), point)
            assert image[moved] == src[index] and label[moved] == src_label[index]
        assert np.array_equal(np.sort(sitk.GetArrayFromImage(label), axis=None),
                              np.sort(sitk.GetArrayFromImage(src_label), axis=None))


def test_kits19_leaking_split_is_rejected(tmp_path, monkeypatch):
    source = make_kits(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    monkeypatch.setattr(kits19, "seeded_split", lambda ids, *a, **k: (sorted(ids), ["kidney_1", "kidney_2"]))
    with pytest.raises(ConversionError, match=r"kidney_1.*kidney_2.*both train and val"):
        kits19.main(["-i", source])
    assert not os.path.exists(raw) or not os.listdir(raw)
