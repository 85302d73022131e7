"""The how-to's "small run first" block, extracted from docs/how-to/train-on-your-datasets.md and run as written
with bash on two tiny datasets of the kind it describes (1-channel MR; 2-channel T2 + ADC), so the doc cannot
drift from the code."""
from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import clean_env

pytestmark = pytest.mark.integration
HOWTO = os.path.join(os.path.dirname(__file__), "..", "docs", "how-to", "train-on-your-datasets.md")


def small_run_block() -> str:
    text = open(HOWTO, encoding="utf-8").read()
    blocks = re.findall(r"```bash small-run\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the how-to must hold exactly one ```bash small-run block"
    return blocks[0]


def write_dataset(raw: str, name: str, channels: dict, labels: dict, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder = os.path.join(raw, name)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        os.makedirs(os.path.join(folder, sub))
    for i in range(5):
        split = "Tr" if i < 4 else "Ts"
        label = np.zeros((12, 32, 32), np.uint8)
        z, y, x = rng.integers(3, 6), rng.integers(8, 16), rng.integers(8, 16)
        label[z:z + 5, y:y + 10, x:x + 10] = 1
        for c in range(len(channels)):
            image = rng.normal(100, 10, label.shape) + 80 * label * (c + 1)
            sitk.WriteImage(sitk.GetImageFromArray(image.astype(np.float32)),
                            os.path.join(folder, f"images{split}", f"case{i}_{c:04d}.nii.gz"))
        if split == "Tr":
            sitk.WriteImage(sitk.GetImageFromArray(label), os.path.join(folder, "labelsTr", f"case{i}.nii.gz"))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": channels, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"}, f)


def test_the_small_run_block_runs_as_written(tmp_path):
    env = clean_env(str(tmp_path))
    env.pop("nnUNet_extTrainer")  # the block sets it itself
    write_dataset(env["nnUNet_raw"], "Dataset501_MyMR", {"0": "T2"}, {"background": 0, "lesion": 1}, 0)
    write_dataset(env["nnUNet_raw"], "Dataset502_MyProstate", {"0": "T2", "1": "ADC"},
                  {"background": 0, "prostate": 1}, 1)
    proc = subprocess.run(["bash", "-e", "-c", small_run_block()], cwd=tmp_path, env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "task 'MyMR' derived" in proc.stdout and "MyProstate" in proc.stdout
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "small_run_prostate" / "case4.nii.gz")))
    assert seg.shape == (12, 32, 32) and set(np.unique(seg)) <= {0, 1}
    assert (tmp_path / "small_run_all" / "labels.json").is_file()
