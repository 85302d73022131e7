"""Multi-site prostate converter on a fake six-site tree: per-site mask names and values, .nii and .nii.gz,
site in the case id, binarised labels, per-site 80 % split, integrity check."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fake_sources import read_array, write_image
from nnunetv2_universal.dataset_conversion import multisite_prostate as prostate
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

SITE_FORMAT = {  # site -> (mask suffix, mask value, extension)
    "BIDMC": ("_segmentation", 1, ".nii.gz"), "BMC": ("_Segmentation", 2, ".nii.gz"),
    "HK": ("_segmentation", 255, ".nii.gz"), "I2CVB": ("_segmentation", 1, ".nii"),
    "RUNMC": ("_segmentation", 1, ".nii.gz"), "UCL": ("_segmentation", 255, ".nii.gz"),
}


def make_prostate(root, per_site=5):
    for site, (suffix, value, ext) in SITE_FORMAT.items():
        for n in range(per_site):
            mask = np.zeros((6, 16, 16), np.uint8)
            mask[2:4, 4:8, 4:8] = value
            write_image(os.path.join(root, site, f"Case{n:02d}{ext}"), np.full((6, 16, 16), n + 1, np.float32),
                        (0.6, 0.6, 3.0), compress=ext.endswith(".gz"))
            write_image(os.path.join(root, site, f"Case{n:02d}{suffix}{ext}"), mask, (0.6, 0.6, 3.0),
                        compress=ext.endswith(".gz"))
    return root


@pytest.fixture
def out(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    return tmp_path / "raw" / "Dataset609_MultiSiteProstate"


def test_prostate_conversion(tmp_path, out):
    prostate.main(["-i", make_prostate(str(tmp_path / "src"))])
    labels = sorted(os.listdir(out / "labelsTr"))
    assert len(labels) == 30 and "prostate_BMC_03.nii.gz" in labels and "prostate_I2CVB_00.nii.gz" in labels
    for site in SITE_FORMAT:
        seg = read_array(str(out / "labelsTr" / f"prostate_{site}_01.nii.gz"))
        assert set(np.unique(seg)) == {0, 1} and seg.sum() == 2 * 4 * 4
    assert np.all(read_array(str(out / "imagesTr" / "prostate_HK_04_0000.nii.gz")) == 5)
    split = json.load(open(out / "splits_final.json"))[0]
    for site in SITE_FORMAT:  # first int(0.8 * 5) = 4 cases of each site train, the last validates
        assert f"prostate_{site}_03" in split["train"] and f"prostate_{site}_04" in split["val"]
    assert len(split["train"]) == 24 and len(split["val"]) == 6
    dj = json.load(open(out / "dataset.json"))
    assert dj["channel_names"] == {"0": "T2"} and dj["universal_task"]["spacing"] == [3.0, 1.5, 1.5]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(out), 1)


def test_prostate_missing_mask_names_the_case(tmp_path, out):
    src = make_prostate(str(tmp_path / "src"), per_site=2)
    os.remove(os.path.join(src, "UCL", "Case01_segmentation.nii.gz"))
    with pytest.raises(ConversionError, match="prostate_UCL_01"):
        prostate.main(["-i", src])
    assert not out.exists()
