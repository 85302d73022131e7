"""The echo converters' splits: `--split paper` (default) gives the echo paper's Table 1 partition, checked on fake
trees with the real datasets' sizes (file lists only: no video is read), and writes patient-level folds;
`--split official` keeps the datasets' own splits (tests/test_convert_echo.py)."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest

import fake_echo_sources as fake
from fake_sources import set_raw
from nnunetv2_universal.dataset_conversion import camus, echonet_dynamic, echonet_pediatric


def camus_release(root, sizes=(400, 50, 50)) -> str:
    """CAMUS_public with 500 (empty) patient folders and database_split lists of the given sizes."""
    base = os.path.join(root, "CAMUS_public")
    patients = [f"patient{i:04d}" for i in range(1, sum(sizes) + 1)]
    for p in patients:
        os.makedirs(os.path.join(base, "database_nifti", p))
    os.makedirs(os.path.join(base, "database_split"))
    start = 0
    for part, n in zip(("training", "validation", "testing"), sizes):
        with open(os.path.join(base, "database_split", f"subgroup_{part}.txt"), "w") as f:
            f.write("\n".join(patients[start:start + n]) + "\n")
        start += n
    return base


def traced(file_name: str) -> list:
    """Two traced frames (long axis + two chords each) in EchoNet-Dynamic's row format."""
    return fake.chord_rows(file_name, 1, 20, top=30, bottom=40) + fake.chord_rows(file_name, 9, 10, top=30, bottom=40)


def dynamic_release(root, sizes=(("TRAIN", 7465), ("VAL", 1288), ("TEST", 1277))) -> str:
    base = os.path.join(root, "EchoNet-Dynamic")
    files, rows = [], []
    for split, n in sizes:
        for i in range(n):
            name = f"0X{split}{i:05d}"
            files.append([name, 60, 30, 75, 112, 112, 50, 40, split])
            rows += traced(f"{name}.avi")
    fake.write_csv(os.path.join(base, "FileList.csv"), ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth",
                                                       "FPS", "NumberOfFrames", "Split"], files)
    fake.write_csv(os.path.join(base, "VolumeTracings.csv"), ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], rows)
    return base


def pediatric_release(root, per_view) -> str:
    """per_view {view: (clips in folds 0-7, clips in folds 8-9)}; one patient per clip, triangle tracings."""
    base = os.path.join(root, "pediatric_echo_avi")
    for view, (train, test) in per_view.items():
        files, rows = [], []
        for i in range(train + test):
            fold = i % 8 if i < train else 8 + i % 2
            name = f"P{view}{i:05d}-{view}-{i:06d}.avi"
            files.append([name, 58, "F", 7, 20, 110, fold])
            for frame, size in ((2, 30), (7, 15)):
                rows += [[name, 50, 50, frame], [name, 50 + size, 50, frame], [name, 50, 50 + size, frame]]
        fake.write_csv(os.path.join(base, view, "FileList.csv"),
                       ["FileName", "EF", "Sex", "Age", "Weight", "Height", "Split"], files)
        fake.write_csv(os.path.join(base, view, "VolumeTracings.csv"), ["FileName", "X", "Y", "Frame"], rows)
    return base


def counts(jobs, view=None):
    return Counter(job[-1] for job in jobs if view is None or job[3] == view)


def test_camus_table1_counts(tmp_path):
    root = camus_release(str(tmp_path))
    for split, expected in (("paper", {"train": 450, "test": 50}), ("official", {"train": 400, "val": 50,
                                                                                  "test": 50})):
        patients = camus.find_patients("nifti", root, split)
        assert Counter(p[2] for p in patients) == expected  # per view: every patient gives an A2C and an A4C clip


def test_echonet_dynamic_table1_counts(tmp_path):
    source = dynamic_release(str(tmp_path))
    assert counts(echonet_dynamic.dynamic_jobs(source)) == {"train": 8753, "test": 1277}
    assert counts(echonet_dynamic.dynamic_jobs(source, "official")) == {"train": 7465, "val": 1288, "test": 1277}


def test_echonet_pediatric_table1_counts(tmp_path):
    source = pediatric_release(str(tmp_path), {"A4C": (2580, 704), "PSAX": (3559, 967)})
    jobs = echonet_pediatric.pediatric_jobs(source)
    assert counts(jobs, "A4C") == {"train": 2580, "test": 704}
    assert counts(jobs, "PSAX") == {"train": 3559, "test": 967}
    official = counts(echonet_pediatric.pediatric_jobs(source, "official"), "A4C")
    assert official == {"train": 2580, "val": 352, "test": 352}


def test_paper_split_writes_patient_level_folds(tmp_path, monkeypatch):
    """The paper split keeps the official val patients for training and writes folds in which both views of a
    patient stay together; dataset.json says which split was used."""
    source = fake.make_camus_nifti(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    camus.main(["-i", source])
    folder = os.path.join(raw, "Dataset630_CAMUS")
    with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as f:
        dataset = json.load(f)
    with open(os.path.join(folder, "splits_final.json"), encoding="utf-8") as f:
        splits = json.load(f)
    meta = dataset["echo_case_metadata"]
    assert dataset["echo_split"] == "paper"
    training = sorted(c for c, m in meta.items() if m["split"] == "train")
    assert {m["split"] for m in meta.values()} == {"train", "test"} and dataset["numTraining"] == len(training)
    assert len(splits) == 2  # two training patients here -> two folds (five with enough patients)
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == training and not set(fold["train"]) & set(fold["val"])
        assert len({c.split("_")[1] for c in fold["val"]}) == 1 and len(fold["val"]) == 2  # one patient, 2 views


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        echonet_dynamic.dynamic_jobs(str(tmp_path), "random")
