"""Shared fixtures. The integration fixture runs the real console scripts once per session on a tiny synthetic
collection, in a clean environment that holds only the documented set-up (nnU-Net's three path variables and
nnUNet_extTrainer=$(nnUNetv2_universal_trainer_folder))."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
COLLECTION_ID = "900"
PLANS = "UniSegPlansCPUDemo"


def clean_env(root: str) -> dict:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", root), "LANG": "C.UTF-8",
           "nnUNet_raw": os.path.join(root, "raw"), "nnUNet_preprocessed": os.path.join(root, "preprocessed"),
           "nnUNet_results": os.path.join(root, "results"),
           # 2-core machine: no worker pools where nnU-Net lets us choose
           "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}
    for d in ("raw", "preprocessed", "results"):
        os.makedirs(env[f"nnUNet_{d}"], exist_ok=True)
    # The one documented line of set-up.
    folder = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_trainer_folder")], env=env, check=True,
                            capture_output=True, text=True).stdout.strip()
    env["nnUNet_extTrainer"] = folder
    return env


def run(cmd, env, extra_env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run a console script; on failure show its output."""
    full_env = dict(env, **(extra_env or {}))
    proc = subprocess.run([os.path.join(BIN, cmd[0])] + [str(c) for c in cmd[1:]], env=full_env,
                          capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def collection_workspace(tmp_path_factory):
    """Synthetic members (4 train + 1 test case each), collection 900 built, planned and preprocessed."""
    root = str(tmp_path_factory.mktemp("universal"))
    env = clean_env(root)
    from nnunetv2_universal.demo.synthetic import make_synthetic_datasets
    members = make_synthetic_datasets(env["nnUNet_raw"], 501, num_train=5, num_test=1, seed=1)
    run(["nnUNetv2_universal_build_collection", "-d", "501", "502", "503", "504", "-o", COLLECTION_ID, "-n",
         "Synth"], env)
    run(["nnUNetv2_universal_plan_and_preprocess", "-d", COLLECTION_ID, "-pl", "cpu_demo", "-np", "1",
         "--no_pbar", "--verify_dataset_integrity"], env)
    return {"root": root, "env": env, "members": members}
