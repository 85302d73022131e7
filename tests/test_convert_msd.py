"""The five MSD CT converters (603-607) on fake TaskXX_Name trees with macOS `._*` junk, dataset.json and
imagesTs."""
from __future__ import annotations

import importlib
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from fake_sources import blob_label, ct_volume, set_raw, write_image
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

SHAPE = (6, 16, 16)
# module, MSD folder, case ids, dataset folder, expected labels, dataset.json labels as MSD writes them
MODULES = [
    ("msd_hepatic_vessel", "Task08_HepaticVessel", ["hepaticvessel_001", "hepaticvessel_002", "hepaticvessel_010"],
     "Dataset603_HepaticVessel", {"background": 0, "vessel": 1, "tumour": 2},
     {"0": "background", "1": "Vessel", "2": "Tumour"}),
    ("msd_pancreas", "Task07_Pancreas", ["pancreas_001", "pancreas_004", "pancreas_421"],
     "Dataset604_Pancreas", {"background": 0, "pancreas": 1, "tumour": 2},
     {"0": "background", "1": "pancreas", "2": "cancer"}),
    ("msd_colon", "Task10_Colon", ["colon_001", "colon_005", "colon_138"],
     "Dataset605_Colon", {"background": 0, "colon_cancer": 1}, {"0": "background", "1": "colon cancer primaries"}),
    ("msd_lung", "Task06_Lung", ["lung_001", "lung_003", "lung_096"],
     "Dataset606_Lung", {"background": 0, "lung_cancer": 1}, {"0": "background", "1": "cancer"}),
    ("msd_spleen", "Task09_Spleen", ["spleen_2", "spleen_10", "spleen_63"],
     "Dataset607_Spleen", {"background": 0, "spleen": 1}, {"0": "background", "1": "spleen"}),
]
GEOMETRY = [((0.8, 0.8, 5.0), (-200.0, -180.0, -400.0), None),
            ((0.7, 0.7, 2.5), (5.0, -3.0, 12.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
            ((0.9, 0.9, 1.5), (0.0, 0.0, 0.0), None)]


def _arrays(i, values):
    image = (ct_volume(SHAPE, seed=i) + 50 * i).astype(np.int16)
    return image, blob_label(SHAPE, values if i != 2 else values[:1], seed=i)


def make_task(root, folder, cases, ds_labels):
    task = os.path.join(root, folder)
    values = tuple(int(k) for k in ds_labels if k != "0")
    for i, case in enumerate(cases):
        image, label = _arrays(i, values)
        spacing, origin, direction = GEOMETRY[i]
        write_image(os.path.join(task, "imagesTr", f"{case}.nii.gz"), image, spacing, origin, direction)
        write_image(os.path.join(task, "labelsTr", f"{case}.nii.gz"), label, spacing, origin, direction)
        for sub in ("imagesTr", "labelsTr"):  # macOS resource files as shipped in the MSD tars
            with open(os.path.join(task, sub, f"._{case}.nii.gz"), "wb") as f:
                f.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    prefix = cases[0].rsplit("_", 1)[0]
    write_image(os.path.join(task, "imagesTs", f"{prefix}_999.nii.gz"), ct_volume(SHAPE, seed=7))
    with open(os.path.join(task, "dataset.json"), "w") as f:
        json.dump({"name": folder.split("_", 1)[1], "modality": {"0": "CT"}, "labels": ds_labels,
                   "numTraining": len(cases), "training": [], "test": []}, f)
    with open(os.path.join(root, f"._{folder}"), "wb") as f:
        f.write(b"junk")
    return task, values



@pytest.mark.parametrize("module_name, folder_name, cases, dataset, labels, ds_labels", MODULES,
                         ids=[m[0] for m in MODULES])
def test_msd_conversion(tmp_path, monkeypatch, capsys, module_name, folder_name, cases, dataset, labels, ds_labels):
    module = importlib.import_module(f"nnunetv2_universal.dataset_conversion.{module_name}")
    task, values = make_task(tmp_path / "msd", folder_name, cases, ds_labels)
    raw = set_raw(monkeypatch, tmp_path)
    # the task folder itself for odd modules, its parent for the others
    module.main(["-i", task if module.DEFAULT_ID % 2 else os.path.dirname(task)])
    folder = os.path.join(raw, dataset)
    assert os.listdir(raw) == [dataset]
    assert folder in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == sorted(f"{c}_0000.nii.gz" for c in cases)
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == sorted(f"{c}.nii.gz" for c in cases)
    assert os.listdir(os.path.join(folder, "imagesTs")) == []

    for i, case in enumerate(cases):
        src = sitk.ReadImage(os.path.join(task, "imagesTr", f"{case}.nii.gz"))
        image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(os.path.join(folder, "labelsTr", f"{case}.nii.gz"))
        expected_image, expected_label = _arrays(i, values)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected_image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected_label)
        assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) == {0, *(values if i != 2 else values[:1])}
        for o in (image, label):
            assert np.allclose(o.GetSpacing(), src.GetSpacing()) and np.allclose(o.GetOrigin(), src.GetOrigin())
            assert np.allclose(o.GetDirection(), src.GetDirection())
    label0 = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", f"{cases[0]}.nii.gz")))
    assert np.array_equal(np.argwhere(label0 == 1), np.argwhere(blob_label(SHAPE, values, seed=0) == 1))

    with open(os.path.join(folder, "dataset.json")) as f:
        ds = json.load(f)
    assert ds["channel_names"] == {"0": "CT"} and ds["labels"] == labels
    assert ds["numTraining"] == 3 and ds["file_ending"] == ".nii.gz"
    entry = ds["universal_task"]
    assert entry["name"] == dataset.split("_", 1)[1] and entry["channels"] == {"0": "CT"}
    assert entry["labels"] == labels and entry["spacing"] == [3.0, 1.5, 1.5]
    assert entry["description"].startswith(("Abdominal CT", "Chest CT"))
    assert not os.path.exists(os.path.join(folder, "splits_final.json"))

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def test_msd_wrong_task_folder_is_rejected(tmp_path, monkeypatch):
    from nnunetv2_universal.dataset_conversion import msd_pancreas, msd_spleen
    lung, _ = make_task(tmp_path, "Task06_Lung", ["lung_001"], {"0": "background", "1": "cancer"})
    raw = set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match="no pancreas_"):
        msd_pancreas.main(["-i", lung])
    # right file names but a dataset.json with other labels (e.g. a renamed folder) is rejected as well
    os.rename(os.path.join(lung, "imagesTr", "lung_001.nii.gz"), os.path.join(lung, "imagesTr", "spleen_1.nii.gz"))
    os.rename(os.path.join(lung, "labelsTr", "lung_001.nii.gz"), os.path.join(lung, "labelsTr", "spleen_1.nii.gz"))
    with open(os.path.join(lung, "dataset.json"), "w") as f:
        json.dump({"labels": {"0": "background", "1": "a", "2": "b"}}, f)
    with pytest.raises(ConversionError, match="dataset.json"):
        msd_spleen.main(["-i", lung])
    assert not os.path.exists(raw) or not os.listdir(raw)
