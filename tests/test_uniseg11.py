"""The UniSeg-11 collection command on 11 tiny fake members (raw format, the converters' ids and channels)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fake_sources import write_image
from nnunetv2_universal.dataset_conversion import uniseg11
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError, finish_dataset, task_entry

NAMES = ["Liver", "KiTS19", "HepaticVessel", "Pancreas", "Colon", "Lung", "Spleen", "VerSe20Binary",
         "MultiSiteProstate", "BraTS21", "AutoPETTumour"]


def make_members(raw, channels_override=None):
    for (what, member_id, channels, _), name in zip(uniseg11.PAPER_MEMBERS, NAMES):
        channels = (channels_override or {}).get(member_id, channels)
        folder = os.path.join(raw, f"Dataset{member_id}_{name}")
        for i in range(3):
            for c in range(channels):
                write_image(os.path.join(folder, "imagesTr", f"{name.lower()}_{i}_{c:04d}.nii.gz"),
                            np.random.default_rng(i).normal(0, 100, (8, 32, 32)).astype(np.float32), (1.0, 1.0, 2.0))
            label = np.zeros((8, 32, 32), np.uint8)
            label[2:5, 8:16, 8:16] = 1
            write_image(os.path.join(folder, "labelsTr", f"{name.lower()}_{i}.nii.gz"), label, (1.0, 1.0, 2.0))
        names = ["CT"] if channels == 1 else (["CT", "PET"] if channels == 2 else ["T1", "T1ce", "T2", "FLAIR"])
        ch = {str(i): m for i, m in enumerate(names[:channels])}
        finish_dataset(folder, os.path.basename(folder), ch, {"background": 0, "target": 1}, 3,
                       task_entry(name, ch, {"background": 0, "target": 1}, f"{what} test task",
                                  spacing=(9.0, 9.0, 9.0)), f"fake {what}")


@pytest.fixture
def env(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        os.makedirs(tmp_path / k)
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    return tmp_path


def write_fingerprints(preprocessed):
    """nnU-Net's fingerprint of each fake member (what its extractor writes for these images), so that planning does
    not start 11 extractor worker pools; fingerprinting itself runs in the demo and integration tests."""
    for (_, member_id, channels, _), name in zip(uniseg11.PAPER_MEMBERS, NAMES):
        intensity = {"mean": 0.0, "median": 0.0, "std": 100.0, "min": -300.0, "max": 300.0,
                     "percentile_99_5": 250.0, "percentile_00_5": -250.0}
        fingerprint = {"foreground_intensity_properties_per_channel": {str(c): intensity for c in range(channels)},
                       "median_relative_size_after_cropping": 1.0, "shapes_after_crop": [[8, 32, 32]] * 3,
                       "spacings": [[2.0, 1.0, 1.0]] * 3}
        folder = os.path.join(preprocessed, f"Dataset{member_id}_{name}")
        os.makedirs(folder)
        with open(os.path.join(folder, "dataset_fingerprint.json"), "w") as f:
            json.dump(fingerprint, f)


def test_uniseg11_builds_and_plans_the_paper_collection(env):
    make_members(str(env / "raw"))
    write_fingerprints(str(env / "preprocessed"))
    uniseg11.main(["--no_preprocess"])
    registry = json.load(open(env / "raw" / "Dataset620_UniSeg11" / "dataset.json"))["universal"]
    assert [t["name"] for t in registry["tasks"]] == NAMES  # the paper's task order
    plans = json.load(open(env / "preprocessed" / "Dataset620_UniSeg11" / "UniSegPlans.json"))
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [64, 192, 192] and cfg["batch_size"] == 2
    arch = cfg["architecture"]["arch_kwargs"]
    assert arch["num_tasks"] == 11 and arch["stem_channels"] == [1, 2, 4]
    spacing = {t: s["spacing"] for t, s in cfg["universal_tasks"].items()}
    assert spacing["Liver"] == [3.0, 1.5, 1.5] and spacing["VerSe20Binary"] == [4.0, 2.0, 2.0]
    assert spacing["BraTS21"] == [1.0, 1.0, 1.0] and spacing["AutoPETTumour"] == [8.0, 4.0, 4.0]
    assert cfg["universal_tasks"]["AutoPETTumour"]["normalization_schemes"] == ["CTNormalization",
                                                                                 "ZScoreNormalization"]


def test_uniseg11_rejects_a_member_with_the_wrong_channel_count(env):
    make_members(str(env / "raw"), channels_override={610: 1})
    with pytest.raises(ConversionError, match="Dataset610_BraTS21.*expects 4"):
        uniseg11.main(["--no_preprocess"])
