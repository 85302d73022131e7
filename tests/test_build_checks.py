"""build_collection checks each member's task entry against its dataset before anything is written: the channel
count (dataset.json and the files of every case) and the labels; a derived task is announced, an invalid derived
name names the file and the fix."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fake_sources import set_raw, write_image
from nnunetv2_universal.collection.build import build_collection
from nnunetv2_universal.registry import RegistryError


def _member(raw, dataset, channels, entry=None, files_per_case=None, labels=None):
    folder = os.path.join(raw, dataset)
    for i in range(2):
        for c in range(files_per_case or len(channels)):
            write_image(os.path.join(folder, "imagesTr", f"case{i}_{c:04d}.nii.gz"), np.zeros((4, 8, 8), np.float32),
                        (1.0, 1.0, 1.0))
        write_image(os.path.join(folder, "labelsTr", f"case{i}.nii.gz"), np.zeros((4, 8, 8), np.uint8), (1.0, 1.0, 1.0))
    dataset_json = {"channel_names": {str(i): c for i, c in enumerate(channels)},
                    "labels": labels or {"background": 0, "prostate": 1}, "numTraining": 2, "file_ending": ".nii.gz"}
    if entry is not None:
        dataset_json["universal_task"] = entry
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)


@pytest.fixture
def raw(tmp_path, monkeypatch):
    folder = set_raw(monkeypatch, tmp_path)
    os.makedirs(folder)
    return folder


def test_a_one_channel_entry_on_a_two_channel_dataset_is_refused(raw):
    entry = {"name": "Prostate", "channels": {"0": "T2"}, "labels": {"background": 0, "prostate": 1}}
    _member(raw, "Dataset801_Prostate", ["T2", "ADC"], entry)
    with pytest.raises(ValueError, match=r"Dataset801_Prostate/dataset.json: its universal_task entry has 1 channel"):
        build_collection([801], 880, "C")
    assert not any(d.startswith("Dataset880") for d in os.listdir(raw))


def test_a_case_missing_a_channel_file_and_mismatched_labels_are_refused(raw):
    _member(raw, "Dataset802_Prostate", ["T2", "ADC"], files_per_case=1)
    with pytest.raises(ValueError, match="case case0: imagesTr/case0_0001.nii.gz is missing"):
        build_collection([802], 881, "C")
    entry = {"name": "Gland", "channels": {"0": "T2"}, "labels": {"background": 0, "gland": 1, "zone": 2}}
    _member(raw, "Dataset803_Gland", ["T2"], entry)
    with pytest.raises(ValueError, match="labels .* differ from its universal_task entry"):
        build_collection([803], 882, "C")


def test_a_derived_task_is_announced_and_an_invalid_derived_name_names_the_fix(raw, capsys):
    _member(raw, "Dataset804_Spleen", ["CT"], labels={"background": 0, "spleen": 1})
    build_collection([804], 883, "C")
    assert "Dataset804_Spleen: no 'universal_task' entry; task 'Spleen' derived" in capsys.readouterr().out
    _member(raw, "Dataset805_3DSpleen", ["CT"], labels={"background": 0, "spleen": 1})
    with pytest.raises(RegistryError, match=r"Dataset805_3DSpleen/dataset.json has no 'universal_task' entry.*add"):
        build_collection([805], 884, "C")


def test_members_stored_in_different_orientations_are_named(raw, capsys):
    _member(raw, "Dataset805_Liver", ["CT"], labels={"background": 0, "liver": 1})
    _member(raw, "Dataset806_Spleen", ["CT"], labels={"background": 0, "spleen": 1})
    def store_flipped(case):  # x and y flipped: RAS; the label with its image
        for folder, name, dtype in (("imagesTr", f"{case}_0000", np.float32), ("labelsTr", case, np.uint8)):
            write_image(os.path.join(raw, "Dataset806_Spleen", folder, f"{name}.nii.gz"), np.zeros((4, 8, 8), dtype),
                        (1.0, 1.0, 1.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))

    store_flipped("case0")
    build_collection([805, 806], 884, "C")
    out = capsys.readouterr().out
    assert "Dataset806_Spleen: training cases stored in 2 orientations (LPS: 1, RAS: 1)" in out
    assert "Dataset805_Liver: training cases" not in out
    store_flipped("case1")
    build_collection([805, 806], 884, "C", overwrite=True)
    assert "members stored in different orientations: Dataset805_Liver (LPS), Dataset806_Spleen (RAS)" in \
        capsys.readouterr().out
