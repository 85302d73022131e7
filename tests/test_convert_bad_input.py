"""Bad input, shown with the liver converter on the MSD Task03_Liver layout: every failure is a ConversionError
naming the case (or the folder) and leaves nnUNet_raw without a dataset or staging folder; an existing dataset is
only replaced with --overwrite."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from fake_sources import blob_label, ct_volume, write_image
from nnunetv2_universal.dataset_conversion import liver
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

SHAPE = (6, 16, 16)


def make_task03(root, cases=(0, 1, 2)):
    task = os.path.join(root, "Task03_Liver")
    for n in cases:
        write_image(os.path.join(task, "imagesTr", f"liver_{n}.nii.gz"), ct_volume(SHAPE, seed=n), (0.7, 0.7, 2.0))
        write_image(os.path.join(task, "labelsTr", f"liver_{n}.nii.gz"), blob_label(SHAPE, seed=n), (0.7, 0.7, 2.0))
        with open(os.path.join(task, "imagesTr", f"._liver_{n}.nii.gz"), "wb") as f:
            f.write(b"\x00\x05\x16\x07")
    return task


@pytest.fixture
def raw(tmp_path, monkeypatch):
    for d in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{d}", str(tmp_path / d))
    return str(tmp_path / "raw")


def assert_nothing_written(raw):
    left = os.listdir(raw) if os.path.isdir(raw) else []
    assert not [d for d in left if d.startswith("Dataset601")], left
    assert not [d for d in left if d.startswith(".staging_")], left


def test_missing_label_file(tmp_path, raw):
    task = make_task03(tmp_path)
    os.remove(os.path.join(task, "labelsTr", "liver_1.nii.gz"))
    with pytest.raises(ConversionError, match=r"case liver_1: label file .*labelsTr/liver_1.nii.gz is missing"):
        liver.main(["-i", task])
    assert_nothing_written(raw)


def test_image_label_geometry_mismatch(tmp_path, raw):
    task = make_task03(tmp_path)
    write_image(os.path.join(task, "labelsTr", "liver_2.nii.gz"), blob_label(SHAPE, seed=2), (0.7, 0.7, 5.0))
    with pytest.raises(ConversionError, match=r"case liver_2: image and label geometry differ: spacing"):
        liver.main(["-i", task])
    assert_nothing_written(raw)
    # a different size is reported the same way
    write_image(os.path.join(task, "labelsTr", "liver_2.nii.gz"), np.zeros((6, 16, 15), np.uint8), (0.7, 0.7, 2.0))
    with pytest.raises(ConversionError, match=r"case liver_2: image and label geometry differ: size"):
        liver.main(["-i", task, "-np", "2"])  # worker processes: the error still reaches the caller
    assert_nothing_written(raw)


def test_unreadable_file(tmp_path, raw):
    task = make_task03(tmp_path)
    with open(os.path.join(task, "imagesTr", "liver_2.nii.gz"), "wb") as f:
        f.write(os.urandom(64) + b"not a nifti at all")
    with pytest.raises(ConversionError, match=r"case liver_2: cannot read .*imagesTr/liver_2.nii.gz"):
        liver.main(["-i", task])
    assert_nothing_written(raw)


def test_empty_source_folder(tmp_path, raw):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match=re.escape(str(empty))):
        liver.main(["-i", str(empty)])
    # an MSD folder whose imagesTr holds only macOS junk is empty as well
    task = make_task03(tmp_path, cases=())
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(task, sub), exist_ok=True)
    with open(os.path.join(task, "imagesTr", "._liver_5.nii.gz"), "wb") as f:
        f.write(b"junk")
    with pytest.raises(ConversionError, match=r"no liver_\*.nii.gz images in .*imagesTr"):
        liver.main(["-i", task])
    assert_nothing_written(raw)


def test_existing_dataset_needs_overwrite(tmp_path, raw):
    task = make_task03(tmp_path)
    liver.main(["-i", task])
    first = os.path.join(raw, "Dataset601_Liver")
    assert sorted(os.listdir(os.path.join(first, "labelsTr"))) == ["liver_0.nii.gz", "liver_1.nii.gz",
                                                                  "liver_2.nii.gz"]
    os.remove(os.path.join(task, "imagesTr", "liver_2.nii.gz"))
    os.remove(os.path.join(task, "labelsTr", "liver_2.nii.gz"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        liver.main(["-i", task])
    assert sorted(os.listdir(os.path.join(first, "labelsTr"))) == ["liver_0.nii.gz", "liver_1.nii.gz",
                                                                  "liver_2.nii.gz"]
    liver.main(["-i", task, "--overwrite"])
    assert sorted(os.listdir(raw)) == ["Dataset601_Liver"]
    assert sorted(os.listdir(os.path.join(first, "labelsTr"))) == ["liver_0.nii.gz", "liver_1.nii.gz"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(first, "labelsTr", "liver_1.nii.gz")))
    np.testing.assert_array_equal(label, blob_label(SHAPE, seed=1))
