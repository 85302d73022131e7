"""Liver converter (Dataset601_Liver): LiTS layout (uncompressed .nii in 'Training Batch 1/2', or flat) and MSD
Task03_Liver layout (with macOS `._*` junk) must give identical datasets with case ids liver_N."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_universal.dataset_conversion import liver
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError
from fake_sources import blob_label, ct_volume, set_raw, write_image

SHAPE = (6, 16, 16)
# LiTS volume number -> (LiTS batch folder, spacing (x, y, z), origin, direction, label values, label dtype)
CASES = {
    0: ("Training Batch 1", (0.7, 0.7, 2.5), (-170.0, -160.0, -300.0), None, (1, 2), np.uint8),
    1: ("Training Batch 1", (0.8, 0.8, 1.0), (10.0, 20.0, 30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1), (1, 2), np.float32),
    28: ("Training Batch 2", (0.6, 0.6, 0.7), (0.0, 0.0, 0.0), None, (1,), np.uint8),
}


def _arrays(n):
    image = (ct_volume(SHAPE, seed=n) + 100 * n).astype(np.int16)
    label = blob_label(SHAPE, CASES[n][4], seed=n)
    return image, label


def make_lits(root, flat=False):
    """LiTS: 'Training Batch 1/2' with volume-N.nii / segmentation-N.nii (uncompressed) and a test volume."""
    for n, (batch, spacing, origin, direction, _, dtype) in CASES.items():
        folder = root if flat else os.path.join(root, batch)
        image, label = _arrays(n)
        write_image(os.path.join(folder, f"volume-{n}.nii"), image, spacing, origin, direction, compress=False)
        write_image(os.path.join(folder, f"segmentation-{n}.nii"), label.astype(dtype), spacing, origin, direction,
                    compress=False)
    test_folder = root if flat else os.path.join(root, "Test Batch")
    write_image(os.path.join(test_folder, "test-volume-0.nii"), ct_volume(SHAPE, seed=99), compress=False)
    return str(root)


def make_msd(root):
    """MSD Task03_Liver: imagesTr/labelsTr liver_N.nii.gz, imagesTs, dataset.json and `._*` junk."""
    task = os.path.join(root, "Task03_Liver")
    for n, (_, spacing, origin, direction, _, _) in CASES.items():
        image, label = _arrays(n)
        write_image(os.path.join(task, "imagesTr", f"liver_{n}.nii.gz"), image, spacing, origin, direction)
        write_image(os.path.join(task, "labelsTr", f"liver_{n}.nii.gz"), label, spacing, origin, direction)
    write_image(os.path.join(task, "imagesTs", "liver_132.nii.gz"), ct_volume(SHAPE, seed=98))
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        with open(os.path.join(task, sub, "._liver_0.nii.gz"), "wb") as f:
            f.write(b"\x00\x05\x16\x07 macOS resource fork")
    with open(os.path.join(task, "dataset.json"), "w") as f:
        json.dump({"name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver",
                                                                         "2": "cancer"}, "numTraining": 3}, f)
    return task



def read(path):
    return sitk.ReadImage(path)


def check_dataset(folder, lits_root):
    """Content checks against the LiTS source files."""
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == [
        "liver_0_0000.nii.gz", "liver_1_0000.nii.gz", "liver_28_0000.nii.gz"]
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == [
        "liver_0.nii.gz", "liver_1.nii.gz", "liver_28.nii.gz"]
    assert os.listdir(os.path.join(folder, "imagesTs")) == []
    for n, (batch, spacing, origin, direction, values, _) in CASES.items():
        source = read(os.path.join(lits_root, batch, f"volume-{n}.nii"))
        image = read(os.path.join(folder, "imagesTr", f"liver_{n}_0000.nii.gz"))
        label = read(os.path.join(folder, "labelsTr", f"liver_{n}.nii.gz"))
        expected_image, expected_label = _arrays(n)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected_image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected_label)
        assert label.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) == {0, *values}
        for out in (image, label):
            assert np.allclose(out.GetSpacing(), source.GetSpacing())
            assert np.allclose(out.GetOrigin(), source.GetOrigin())
            assert np.allclose(out.GetDirection(), source.GetDirection())
        assert np.allclose(image.GetSpacing(), spacing) and np.allclose(image.GetOrigin(), origin)
    # exact voxel positions of case 1 (float label in the source): blob_label(seed=1) boxes
    label1 = sitk.GetArrayFromImage(read(os.path.join(folder, "labelsTr", "liver_1.nii.gz")))
    assert np.array_equal(np.argwhere(label1 == 2), np.argwhere(blob_label(SHAPE, (1, 2), seed=1) == 2))
    assert int((label1 == 1).sum()) == 2 * 3 * 4 and int((label1 == 2).sum()) == 2 * 3 * 4
    assert np.allclose(read(os.path.join(folder, "imagesTr", "liver_1_0000.nii.gz")).GetDirection(),
                       (-1, 0, 0, 0, -1, 0, 0, 0, 1))

    with open(os.path.join(folder, "dataset.json")) as f:
        ds = json.load(f)
    assert ds["channel_names"] == {"0": "CT"}
    assert ds["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    assert ds["numTraining"] == 3 and ds["file_ending"] == ".nii.gz"
    assert ds["universal_task"] == {"name": "Liver", "channels": {"0": "CT"}, "labels": ds["labels"],
                                    "description": liver.DESCRIPTION, "spacing": [3.0, 1.5, 1.5],
                                    "sampling_weight": 0.3}
    assert not os.path.exists(os.path.join(folder, "splits_final.json"))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def test_lits_and_msd_layouts_give_identical_datasets(tmp_path, monkeypatch, capsys):
    lits_root = make_lits(tmp_path / "LiTS")
    msd_task = make_msd(tmp_path / "MSD")

    raw_a = set_raw(monkeypatch, tmp_path / "a")
    liver.main(["-i", lits_root])
    folder_a = os.path.join(raw_a, "Dataset601_Liver")
    assert os.listdir(raw_a) == ["Dataset601_Liver"]
    assert folder_a in capsys.readouterr().out
    check_dataset(folder_a, lits_root)

    raw_b = set_raw(monkeypatch, tmp_path / "b")
    liver.main(["-i", os.path.dirname(msd_task)])  # the parent of Task03_Liver
    folder_b = os.path.join(raw_b, "Dataset601_Liver")
    assert os.listdir(raw_b) == ["Dataset601_Liver"]

    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        files = sorted(os.listdir(os.path.join(folder_a, sub)))
        assert files == sorted(os.listdir(os.path.join(folder_b, sub)))
        for f in files:
            a, b = read(os.path.join(folder_a, sub, f)), read(os.path.join(folder_b, sub, f))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
            assert a.GetPixelID() == b.GetPixelID()
            assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
            assert a.GetDirection() == b.GetDirection()
    with open(os.path.join(folder_a, "dataset.json")) as fa, open(os.path.join(folder_b, "dataset.json")) as fb:
        assert json.load(fa) == json.load(fb)


def test_flat_lits_folder_and_no_double_add(tmp_path, monkeypatch):
    flat = make_lits(tmp_path / "flat", flat=True)
    raw = set_raw(monkeypatch, tmp_path)
    assert liver.convert_liver(flat) == "Dataset601_Liver"
    folder = os.path.join(raw, "Dataset601_Liver")
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == ["liver_0.nii.gz", "liver_1.nii.gz",
                                                                    "liver_28.nii.gz"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read(os.path.join(folder, "labelsTr", "liver_28.nii.gz"))),
                                  _arrays(28)[1])
    # the MSD copy of the same volumes cannot be added a second time
    msd_task = make_msd(tmp_path / "MSD")
    with pytest.raises(FileExistsError, match="--overwrite"):
        liver.main(["-i", msd_task])
    # a folder holding both layouts is rejected
    make_msd(tmp_path / "flat")
    with pytest.raises(ConversionError, match="both"):
        liver.convert_liver(flat, dataset_id=611)
    assert sorted(os.listdir(raw)) == ["Dataset601_Liver"]


def test_non_integer_label_values_are_rejected(tmp_path, monkeypatch):
    source = make_lits(tmp_path / "LiTS")
    label = blob_label(SHAPE, (1, 2), seed=0).astype(np.float32)
    label[0, 0, 0] = 0.5
    write_image(os.path.join(source, "Training Batch 1", "segmentation-0.nii"), label, CASES[0][1], CASES[0][2],
                compress=False)
    raw = set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match=r"case liver_0: label file .*segmentation-0.nii holds non-integer"):
        liver.main(["-i", source])
    assert not os.path.isdir(raw) or os.listdir(raw) == []
