"""AutoPET converter on a fake PETCT_<patient>/<study>/ tree: CTres then SUV, negatives dropped (or kept),
patient-grouped folds, integrity check."""
from __future__ import annotations

import json
import os

import numpy as np

from fake_sources import read_array, write_image
from nnunetv2_universal.dataset_conversion import autopet

STUDIES = {  # patient -> [(study folder, has lesion)]
    "PETCT_0af7ffe12a": [("08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698", True),
                         ("12-03-2006-NA-PET-CT Ganzkoerper  primaer mit KM-10445", False)],
    "PETCT_1b199d094d": [("03-07-2003-NA-Unspecified CT ABDOMEN-93772", True)],
    "PETCT_2c3e4f5a6b": [("01-01-2001-NA-PET-CT Ganzkoerper-11111", True)],
}


def make_autopet(root):
    for patient, studies in STUDIES.items():
        for study, positive in studies:
            folder = os.path.join(root, patient, study)
            shape = (6, 16, 16)
            write_image(os.path.join(folder, "CTres.nii.gz"), np.full(shape, -500, np.float32), (4.0, 4.0, 3.0))
            write_image(os.path.join(folder, "SUV.nii.gz"), np.full(shape, 2.5, np.float32), (4.0, 4.0, 3.0))
            write_image(os.path.join(folder, "CT.nii.gz"), np.zeros((6, 32, 32), np.float32), (2.0, 2.0, 3.0))
            write_image(os.path.join(folder, "PET.nii.gz"), np.zeros(shape, np.float32), (4.0, 4.0, 3.0))
            seg = np.zeros(shape, np.uint8)
            if positive:
                seg[2:4, 5:7, 5:7] = 1
            write_image(os.path.join(folder, "SEG.nii.gz"), seg, (4.0, 4.0, 3.0))
    return root


def _env(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    return tmp_path / "raw" / "Dataset611_AutoPETTumour"


def test_autopet_drops_negatives_and_groups_patients(tmp_path, monkeypatch):
    out = _env(tmp_path, monkeypatch)
    autopet.main(["-i", make_autopet(str(tmp_path / "src"))])
    labels = sorted(os.listdir(out / "labelsTr"))
    assert labels == ["PETCT_0af7ffe12a_0.nii.gz", "PETCT_1b199d094d_0.nii.gz", "PETCT_2c3e4f5a6b_0.nii.gz"]
    assert np.all(read_array(str(out / "imagesTr" / "PETCT_1b199d094d_0_0000.nii.gz")) == -500)  # CTres first
    assert np.allclose(read_array(str(out / "imagesTr" / "PETCT_1b199d094d_0_0001.nii.gz")), 2.5)  # then SUV
    dj = json.load(open(out / "dataset.json"))
    assert dj["channel_names"] == {"0": "CT", "1": "PET"} and dj["universal_task"]["spacing"] == [8.0, 4.0, 4.0]
    assert dj["universal_task"]["prior_modality"] == "PET"  # Hermes' modality prior: the reference feeds SUV
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(out), 1)


def test_autopet_keep_negatives_and_patient_grouping(tmp_path, monkeypatch):
    out = _env(tmp_path, monkeypatch)
    autopet.main(["-i", make_autopet(str(tmp_path / "src")), "--keep_negatives"])
    assert "PETCT_0af7ffe12a_1.nii.gz" in os.listdir(out / "labelsTr")
    assert read_array(str(out / "labelsTr" / "PETCT_0af7ffe12a_1.nii.gz")).max() == 0
    for fold in json.load(open(out / "splits_final.json")):
        sides = {c.rsplit("_", 1)[0]: set() for c in fold["train"] + fold["val"]}
        for part in ("train", "val"):
            for c in fold[part]:
                sides[c.rsplit("_", 1)[0]].add(part)
        assert all(len(s) == 1 for s in sides.values())  # no patient on both sides


def test_autopet_suv_only_as_hermes_reference(tmp_path, monkeypatch):
    """--suv_only: one channel, the SUV, named PET (Hermes' reference input)."""
    out = _env(tmp_path, monkeypatch)
    autopet.main(["-i", make_autopet(str(tmp_path / "src")), "--suv_only"])
    images = sorted(os.listdir(out / "imagesTr"))
    assert images == ["PETCT_0af7ffe12a_0_0000.nii.gz", "PETCT_1b199d094d_0_0000.nii.gz",
                      "PETCT_2c3e4f5a6b_0_0000.nii.gz"]
    assert np.allclose(read_array(str(out / "imagesTr" / images[0])), 2.5)
    dj = json.load(open(out / "dataset.json"))
    assert dj["channel_names"] == {"0": "PET"} and dj["universal_task"]["channels"] == {"0": "PET"}
    from nnunetv2_universal.registry import TaskSpec
    assert TaskSpec.from_dataset_json(dj, "Dataset611_AutoPETTumour").normalization == ["zscore"]
