"""Bad training data stop before fingerprinting, with one line naming the dataset, the case, the file and the value:
label values dataset.json does not declare, a missing channel file, NaN voxels, misnamed files, numTraining."""
from __future__ import annotations

import json
import os
import subprocess

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import BIN, clean_env
from fake_sources import write_image
from nnunetv2_universal.collection.training_data_checks import (TrainingDataError, check_training_data,
                                                                label_values)


def _dataset(folder, num_cases=3, channels=("CT",), label_dtype=np.uint8):
    for i in range(num_cases):
        for c in range(len(channels)):
            write_image(os.path.join(folder, "imagesTr", f"case{i}_{c:04d}.nii.gz"),
                        np.full((4, 8, 8), -100, np.int16), (1.0, 1.0, 1.0))
        label = np.zeros((4, 8, 8), label_dtype)
        label[1:3, 2:6, 2:6] = 1
        write_image(os.path.join(folder, "labelsTr", f"case{i}.nii.gz"), label, (1.0, 1.0, 1.0))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {str(i): c for i, c in enumerate(channels)},
                   "labels": {"background": 0, "liver": 1}, "numTraining": num_cases, "file_ending": ".nii.gz"}, f)
    return folder


def _set_voxel(path, value, dtype=None):
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).astype(dtype or image.get_data_dtype())
    data[0, 0, 0] = value
    nib.save(nib.Nifti1Image(data, image.affine), path)


def test_a_clean_dataset_passes_and_counts_its_cases(tmp_path):
    assert check_training_data(_dataset(str(tmp_path / "Dataset801_Liver"))) == 3


def test_an_undeclared_label_value_names_the_case_the_file_and_the_value(tmp_path):
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    _set_voxel(os.path.join(folder, "labelsTr", "case1.nii.gz"), 3)
    with pytest.raises(TrainingDataError, match=r"Dataset801_Liver: case case1: .*labelsTr/case1.nii.gz holds label "
                                                r"value\(s\) \[3\] that dataset.json's labels do not declare"):
        check_training_data(folder)
    assert check_training_data(folder, read_values=False) == 3  # headers only (build_collection) cannot see it


def test_a_mask_stored_as_0_255_is_named_as_such(tmp_path):
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    label = np.zeros((4, 8, 8), np.uint8)
    label[1:3, 2:6, 2:6] = 255  # how image editors and many exports store a binary mask
    write_image(os.path.join(folder, "labelsTr", "case1.nii.gz"), label, (1.0, 1.0, 1.0))
    with pytest.raises(TrainingDataError, match=r"case case1: .* holds label value\(s\) \[255\] that dataset.json's "
                                                r"labels do not declare \(\[0, 1\]\) \(a binary mask stored as "
                                                r"0/255: store it as 0/1\)"):
        check_training_data(folder)


def test_a_missing_first_channel_file_is_named(tmp_path):
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    os.remove(os.path.join(folder, "imagesTr", "case2_0000.nii.gz"))
    with pytest.raises(TrainingDataError, match=r"case case2: imagesTr/case2_0000.nii.gz is missing .*labelsTr/"
                                                r"case2.nii.gz exists"):
        check_training_data(folder, read_values=False)


def test_nan_voxels_are_refused_although_itk_reads_them_as_zero(tmp_path):
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    _set_voxel(os.path.join(folder, "imagesTr", "case0_0000.nii.gz"), np.nan, np.float32)
    with pytest.raises(TrainingDataError, match=r"case case0: .*case0_0000.nii.gz has 1 NaN or infinite voxel"):
        check_training_data(folder)


@pytest.mark.parametrize("mistake, message", [
    ("numTraining", r"dataset.json says numTraining 5, but imagesTr/labelsTr hold 3 case\(s\)"),
    ("misnamed", r"Dataset801_Liver: imagesTr/case9.nii.gz is not named CASE_XXXX.nii.gz"),
    ("no_label", r"case case9 has image\(s\) but no label labelsTr/case9.nii.gz"),
    ("size", r"case case0: .*case0_0000.nii.gz has size \(8, 8, 5\), its label .* \(8, 8, 4\)"),
    ("fraction", r"case case0: .*labelsTr/case0.nii.gz holds non-integer or NaN values"),
])
def test_other_layout_mistakes_are_named(tmp_path, mistake, message):
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    images = os.path.join(folder, "imagesTr")
    if mistake == "numTraining":
        with open(os.path.join(folder, "dataset.json")) as f:
            dataset_json = json.load(f)
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            json.dump({**dataset_json, "numTraining": 5}, f)
    elif mistake in ("misnamed", "no_label"):
        name = "case9.nii.gz" if mistake == "misnamed" else "case9_0000.nii.gz"
        write_image(os.path.join(images, name), np.zeros((4, 8, 8), np.int16), (1.0, 1.0, 1.0))
    elif mistake == "size":
        write_image(os.path.join(images, "case0_0000.nii.gz"), np.zeros((5, 8, 8), np.int16), (1.0, 1.0, 1.0))
    else:
        _set_voxel(os.path.join(folder, "labelsTr", "case0.nii.gz"), 0.5, np.float32)
    with pytest.raises(TrainingDataError, match=message):
        check_training_data(folder)


@pytest.mark.parametrize("label_geometry, message", [
    ({"direction": (1, 0, 0, 0, -1, 0, 0, 0, 1)},
     r"case0_0000\.nii\.gz has direction \(1\.0, 0\.0, 0\.0, 0\.0, 1\.0, .*\), its label .*labelsTr/case0\.nii\.gz "
     r"\(1\.0, 0\.0, 0\.0, 0\.0, -1\.0"),
    ({"origin": (0.0, 0.0, 3.0)},
     r"case0_0000\.nii\.gz has origin \(0\.0, 0\.0, 0\.0\), its label .* \(0\.0, 0\.0, 3\.0\)"),
    ({"spacing": (1.0, 1.0, 2.0)}, r"has spacing \(1\.0, 1\.0, 1\.0\), its label .* \(1\.0, 1\.0, 2\.0\)"),
], ids=["direction", "origin", "spacing"])
def test_a_label_on_another_grid_than_its_image_is_named(tmp_path, label_geometry, message):
    """nnU-Net pairs image and label voxel by voxel and only warns (with --verify_dataset_integrity) about another
    direction or origin: a label stored y-flipped (as TotalSegmentator's DICOM example is) would train flipped."""
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    label = np.zeros((4, 8, 8), np.uint8)
    write_image(os.path.join(folder, "labelsTr", "case0.nii.gz"), label, **{"spacing": (1.0, 1.0, 1.0),
                                                                            **label_geometry})
    with pytest.raises(TrainingDataError, match=r"Dataset801_Liver: case case0: .*" + message
                       + r".*; image and label must share one voxel grid"):
        check_training_data(folder, read_values=False)
    write_image(os.path.join(folder, "labelsTr", "case0.nii.gz"), label, (1.0, 1.0, 1.0), (0.0, 0.0, 1e-4))
    assert check_training_data(folder) == 3  # header rounding is not a different grid


def test_an_rgb_or_4d_training_image_is_named(tmp_path):
    folder = _dataset(str(tmp_path / "Dataset801_Liver"))
    path = os.path.join(folder, "imagesTr", "case1_0000.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8, 3), np.uint8), isVector=True), path)
    with pytest.raises(TrainingDataError, match=r"case case1: .*case1_0000\.nii\.gz has 3 values per voxel"):
        check_training_data(folder, read_values=False)
    write_image(path, np.zeros((2, 4, 8, 8), np.int16), (1.0, 1.0, 1.0))
    with pytest.raises(TrainingDataError, match=r"case case1: .*case1_0000\.nii\.gz holds 2 volumes \(4D"):
        check_training_data(folder, read_values=False)


def test_label_values_counts_small_integer_ranges_and_falls_back_to_unique():
    assert label_values(np.array([[0, 3], [3, 1]], np.uint8)).tolist() == [0, 1, 3]
    assert label_values(np.array([-2, 5, 5], np.int16)).tolist() == [-2, 5]
    assert label_values(np.array([0, 70000], np.int32)).tolist() == [0, 70000]


@pytest.mark.integration
def test_plan_and_preprocess_stops_before_fingerprinting_with_one_line(tmp_path):
    """The issue's walk: a collection of two members, one label voxel = 3 in a 0/1 dataset."""
    env = clean_env(str(tmp_path))
    raw = env["nnUNet_raw"]
    for dataset in ("Dataset801_Liver", "Dataset802_Spleen"):
        _dataset(os.path.join(raw, dataset))
    build = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_build_collection"), "-d", "801", "802", "-o", "880",
                            "-n", "Two"], env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    _set_voxel(os.path.join(raw, "Dataset802_Spleen", "labelsTr", "case2.nii.gz"), 3)
    proc = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_plan_and_preprocess"), "-d", "880", "-pl",
                           "cpu_demo"], env=env, capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Dataset802_Spleen: case case2:" in lines[0] and "labelsTr/case2.nii.gz" in lines[0] and "[3]" in lines[0]
    assert os.listdir(env["nnUNet_preprocessed"]) == []  # no fingerprint, no plans
