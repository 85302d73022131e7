"""Shared fixtures. The integration fixture runs the real console scripts once per session on a tiny synthetic
collection, in a clean environment that holds only the documented set-up (nnU-Net's three path variables and
nnUNet_extTrainer=$(nnUNetv2_universal_trainer_folder))."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

BIN = os.path.dirname(sys.executable)
COLLECTION_ID = "900"
PLANS = "UniSegPlansCPUDemo"
ECHO_COLLECTION = "663"


# The collection's tests in two groups of about equal time: the two workers build the workspace once each and
# share the work, instead of one worker running every collection test after the other.
COLLECTION_SECOND_GROUP = ("test_hermes_end_to_end", "test_m4oe_end_to_end", "test_idle_parameters",
                           "test_stock_predict_every_trainer")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which writes the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`-n 2 --dist loadgroup`, the Makefile's test command), tests that share a session
    workspace run in one worker, so each workspace is built once per group."""
    for item in items:
        for fixture in ("collection_workspace", "echo_workspace"):
            if fixture in getattr(item, "fixturenames", ()):
                second = fixture == "collection_workspace" and item.module.__name__ in COLLECTION_SECOND_GROUP
                item.add_marker(pytest.mark.xdist_group(fixture + ("_2" if second else "")))
                break


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


def train_killed_and_resumed(cmd, env, output_folder: str, extra_env=None,
                             timeout=600) -> subprocess.CompletedProcess:
    """nnUNetv2_train with a *_test trainer (two epochs, checkpoint after each), SIGKILLed mid-epoch 1 by the test
    (the trainer pauses there, see short_schedules._ShortSchedule), then resumed with --c (without
    -pretrained_weights). Checks that the kill came after checkpoint_latest was written and that the resumed run
    starts at epoch 1; returns the resumed run (the killed run's output in .killed_output)."""
    from nnunetv2_universal.training.variants.short_schedules import PAUSE_FILE_ENV
    pause_file = os.path.join(env["nnUNet_results"], f"pause_{abs(hash(output_folder))}")
    full_env = dict(env, **(extra_env or {}), **{PAUSE_FILE_ENV: pause_file})
    proc = subprocess.Popen([os.path.join(BIN, cmd[0])] + [str(c) for c in cmd[1:]], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while not os.path.exists(pause_file):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            out = proc.communicate()[0].decode("utf-8", "replace")
            raise AssertionError(f"{' '.join(map(str, cmd))} never reached the pause point ({proc.returncode}):\n"
                                 f"{out[-6000:]}")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    killed_output = proc.communicate()[0].decode("utf-8", "replace")
    assert proc.returncode == -signal.SIGKILL
    assert os.path.isfile(os.path.join(output_folder, "checkpoint_latest.pth"))
    assert not os.path.isfile(os.path.join(output_folder, "checkpoint_final.pth"))
    resume = [c for i, c in enumerate(cmd) if "-pretrained_weights" not in (c, cmd[i - 1])]  # nnU-Net refuses both
    resumed = run(resume + ["--c"], env, {**(extra_env or {}), PAUSE_FILE_ENV: pause_file}, timeout=timeout)
    assert re.search(r": Epoch 1\s*$", resumed.stdout, re.M) and not re.search(r": Epoch 0\s*$", resumed.stdout, re.M)
    assert os.path.isfile(os.path.join(output_folder, "checkpoint_final.pth"))
    assert not [f for f in os.listdir(output_folder) if f.endswith(".partial")]
    resumed.killed_output = killed_output
    return resumed


def load_final_checkpoint(output_folder: str, conditioned: bool = True) -> dict:
    """The final checkpoint, loaded without executing pickled code; checks it is complete and finite, and (for the
    universal trainers) that the condition diagnostic was logged for both epochs."""
    import torch
    from nnunetv2_universal.finetuning.weights import load_checkpoint_safely
    checkpoint = load_checkpoint_safely(os.path.join(output_folder, "checkpoint_final.pth"))
    assert checkpoint["current_epoch"] == 2
    if conditioned:
        assert len(checkpoint["logging"]["condition_sensitivity"]) == 2
        assert os.path.isfile(os.path.join(output_folder, "progress.png"))
    assert all(torch.isfinite(v).all() for v in checkpoint["network_weights"].values() if v.is_floating_point())
    return checkpoint


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


@pytest.fixture(scope="session")
def swin_workspace(collection_workspace, tmp_path_factory):
    """The collection also planned and preprocessed for `-c 2d` with a shrunken m4oe_swin template (plans
    M4oESwinTest)."""
    import json

    from nnunetv2_universal.collection.templates import M4OE_SWIN
    env = collection_workspace["env"]
    template = json.loads(json.dumps(M4OE_SWIN))
    template.update(plans_name="M4oESwinTest", batch_size=2, patch_size=[32, 32])
    template["arch_kwargs"].update(embed_dim=12, num_heads=[1, 2, 3, 4], window_size=2)
    path = tmp_path_factory.mktemp("swin") / "swin.json"
    path.write_text(json.dumps(template))
    run(["nnUNetv2_universal_plan_and_preprocess", "-d", COLLECTION_ID, "-pl", str(path), "-c", "2d", "-np", "1",
         "--no_pbar"], env)
    return {"env": env, "dataset": f"Dataset{COLLECTION_ID}_Synth", "plans": "M4oESwinTest"}


@pytest.fixture(scope="session")
def echo_workspace(tmp_path_factory):
    """Synthetic two-view echo collection, planned, trained (EchoPromptTrainer_test, killed and resumed)."""
    from echo_synthetic import echo_test_template, tiny_bert_folder, tiny_sam_checkpoint, write_synthetic_echo_dataset
    root = str(tmp_path_factory.mktemp("echo"))
    env = clean_env(root)
    write_synthetic_echo_dataset(env["nnUNet_raw"], 661, "SynthCAMUS", "CAMUS_p", "CAMUS", "A2C", 3, 1, 2, False, 1)
    write_synthetic_echo_dataset(env["nnUNet_raw"], 662, "SynthPeds", "PED_p", "EchoNetPediatric", "PSAX", 3, 1, 2,
                                 True, 2)
    env.update(nnUNet_universal_sam_checkpoint=tiny_sam_checkpoint(root),
               nnUNet_universal_clinicalbert=tiny_bert_folder(root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    template = echo_test_template(root)
    run(["nnUNetv2_universal_build_echo_collection", "-d", "661", "662", "-o", ECHO_COLLECTION, "-n", "SynthEcho"], env)
    run(["nnUNetv2_universal_plan_echo", "-d", ECHO_COLLECTION, "-pl", template, "-np", "1"], env)
    fold = os.path.join(env["nnUNet_results"], f"Dataset{ECHO_COLLECTION}_SynthEcho",
                        "EchoPromptTrainer_test__EchoPlansTest__3d_fullres", "fold_0")
    train_killed_and_resumed(["nnUNetv2_train", ECHO_COLLECTION, "3d_fullres", "0", "-tr", "EchoPromptTrainer_test",
                              "-p", "EchoPlansTest", "-device", "cpu"], env, fold, {"nnUNet_n_proc_DA": "0"})
    load_final_checkpoint(fold)
    raw = os.path.join(env["nnUNet_raw"], f"Dataset{ECHO_COLLECTION}_SynthEcho")
    from batchgenerators.utilities.file_and_folder_operations import load_json
    view = str(list(load_json(os.path.join(raw, "dataset.json"))["echo_views"])[0])
    return {"root": root, "env": env, "raw": raw, "collection": ECHO_COLLECTION, "view": view}


def trainer_maker(trainer_name: str, env: dict, dataset: str, plans_name: str, configuration: str, monkeypatch):
    """make(hooks=True, fold=0, **class_attributes) -> the plugin trainer `trainer_name`, built in-process on a
    workspace's preprocessed dataset, idle-parameter hooks on or off (a subclass with its own output folder)."""
    from batchgenerators.utilities.file_and_folder_operations import join, load_json

    from nnunetv2_universal.inference.predictor import _plugin_trainer_class
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    pre = join(env["nnUNet_preprocessed"], dataset)
    plans, dataset_json = load_json(join(pre, f"{plans_name}.json")), load_json(join(pre, "dataset.json"))
    trainer_class = _plugin_trainer_class(trainer_name)

    def make(hooks: bool = True, fold=0, **attributes):
        import torch
        torch.manual_seed(0)
        # a name of its own: its output folder is not another test's model folder
        cls = type(f"{trainer_name}_inProcess", (trainer_class,), {"idle_parameters_stay_still": hooks, **attributes})
        return cls(dict(plans, continue_training=False), configuration, fold, dataset_json, torch.device("cpu"))

    return make
