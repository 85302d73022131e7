"""A typical user error in each console-script family ends with one readable line on stderr, exit status 2 and
nothing written; `--traceback` brings the traceback back."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import BIN, clean_env

pytestmark = pytest.mark.integration

CASES = {  # family: (command, part of the message)
    "converter": (["nnUNetv2_universal_convert_liver", "-i", "{root}/no_such_folder"], "no_such_folder"),
    "build_collection": (["nnUNetv2_universal_build_collection", "-d", "9001", "-o", "990", "-n", "X"], "9001"),
    "plan": (["nnUNetv2_universal_plan_and_preprocess", "-d", "9002"], "9002"),
    "predict": (["nnUNetv2_universal_predict", "-d", "9003", "--list-tasks"], "9003"),
    "finetune": (["nnUNetv2_universal_export_backbone", "-i", "{root}/missing.pth", "-o", "{root}/out.pth"],
                 "missing.pth"),
    "echo": (["nnUNetv2_universal_predict_echo", "-i", "{root}/no_clips", "-o", "{root}/out", "-d", "9004"], "9004"),
}


@pytest.mark.parametrize("family", list(CASES))
def test_a_user_error_is_one_line_and_exit_status_2(family, tmp_path):
    env = clean_env(str(tmp_path))
    before = {d: sorted(os.listdir(env[f"nnUNet_{d}"])) for d in ("raw", "preprocessed", "results")}
    command, message = CASES[family]
    command = [c.format(root=tmp_path) for c in command]
    proc = subprocess.run([os.path.join(BIN, command[0])] + command[1:], env=env, capture_output=True, encoding="utf-8",
                          errors="replace")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{command[0]}: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert {d: sorted(os.listdir(env[f"nnUNet_{d}"])) for d in before} == before
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "out.pth")
    if family == "converter":  # the traceback on request
        shown = subprocess.run([os.path.join(BIN, command[0])] + command[1:] + ["--traceback"], env=env,
                               capture_output=True, encoding="utf-8",
                          errors="replace")
        assert shown.returncode != 0 and "Traceback" in shown.stderr


def test_a_plugin_trainer_on_a_plain_dataset_stops_before_nnunet_writes_anything(tmp_path):
    """Inside stock nnUNetv2_train: the plugin's check runs before nnU-Net creates the output folder and log."""
    env = clean_env(str(tmp_path))
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset905_Plain")
    os.makedirs(pre)
    with open(os.path.join(pre, "nnUNetPlans.json"), "w") as f:
        json.dump({"dataset_name": "Dataset905_Plain", "plans_name": "nnUNetPlans",
                   "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}}}, f)
    with open(os.path.join(pre, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 2,
                   "file_ending": ".nii.gz"}, f)
    proc = subprocess.run([os.path.join(BIN, "nnUNetv2_train"), "905", "3d_fullres", "0", "-tr", "UniSegTrainer",
                           "-device", "cpu"], env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nnUNetv2_train: dataset.json has no 'universal' block"), proc.stderr
    assert os.listdir(env["nnUNet_results"]) == []
