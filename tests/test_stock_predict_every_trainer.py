"""Stock `nnUNetv2_predict` with `nnUNet_universal_task` works for every plugin trainer: the real console script
segments a 1-channel CT task of the test collection and writes what the plugin's own predictor writes for that
task. Model folders are written in-process (initialised network, checkpoint_final.pth, plans.json, dataset.json);
training itself is tested elsewhere."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import BIN, COLLECTION_ID, PLANS, run

pytestmark = pytest.mark.integration

TASK = "SynthKidneyCT"  # 2 classes in a collection whose largest task has 4: the hidden channels are exercised
COLLECTION_TRAINERS = ["UniSegTrainer", "UniSegTrainerDecoderFiLM", "DoDNetTrainer", "M4oETrainer", "HermesTrainer",
                       "UniSegTrainerTaskHeads"]


def _trainer_class(name: str):
    from nnunetv2_universal.training.hermes_trainer import HermesTrainer
    from nnunetv2_universal.training.m4oe_trainer import M4oETrainer
    from nnunetv2_universal.training.task_heads_trainer import UniSegTrainerTaskHeads
    from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer
    from nnunetv2_universal.training.variants import uniseg_ablations
    known = {"UniSegTrainer": UniSegTrainer, "M4oETrainer": M4oETrainer, "HermesTrainer": HermesTrainer,
             "UniSegTrainerDecoderFiLM": uniseg_ablations.UniSegTrainerDecoderFiLM,
             "DoDNetTrainer": uniseg_ablations.DoDNetTrainer, "UniSegTrainerTaskHeads": UniSegTrainerTaskHeads}
    return known[name]


def _write_model_folder(trainer_name: str, env: dict, monkeypatch) -> str:
    """An initialised (untrained) model folder exactly as nnUNetv2_train lays it out."""
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(k, env[k])
    pre = join(env["nnUNet_preprocessed"], f"Dataset{COLLECTION_ID}_Synth")
    plans, dataset_json = load_json(join(pre, f"{PLANS}.json")), load_json(join(pre, "dataset.json"))
    torch.manual_seed(0)
    trainer = _trainer_class(trainer_name)(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                                           torch.device("cpu"))
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the test-time mirroring axes
    shutil.copy(join(pre, f"{PLANS}.json"), join(trainer.output_folder_base, "plans.json"))
    shutil.copy(join(pre, "dataset.json"), join(trainer.output_folder_base, "dataset.json"))
    trainer.save_checkpoint(join(trainer.output_folder, "checkpoint_final.pth"))
    return trainer.output_folder_base


def test_stock_nnunet_predict_echo_needs_no_view(echo_workspace, tmp_path):
    """The echo model is view-agnostic: no view id is needed, and the variable changes nothing."""
    env, images = echo_workspace["env"], join(echo_workspace["raw"], "imagesTs")
    common = ["-d", echo_workspace["collection"], "-c", "3d_fullres", "-tr", "EchoPromptTrainer_test", "-p",
              "EchoPlansTest", "-f", "0", "-device", "cpu", "--disable_tta"]
    run(["nnUNetv2_predict", "-i", images, "-o", tmp_path / "with", *common], env,
        {"nnUNet_universal_task": echo_workspace["view"]})
    run(["nnUNetv2_predict", "-i", images, "-o", tmp_path / "without", *common], env)
    predictions = sorted(f for f in os.listdir(tmp_path / "without") if f.endswith(".nii.gz"))
    assert len(predictions) == 4
    for f in predictions:
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "without" / f)))
        assert seg.shape == (16, 32, 32) and set(np.unique(seg)) <= {0, 1, 2}
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "with" / f))), seg)


@pytest.mark.parametrize("trainer_name", COLLECTION_TRAINERS)
def test_stock_nnunet_predict_with_the_task_variable(trainer_name, collection_workspace, tmp_path, monkeypatch):
    env = collection_workspace["env"]
    model = _write_model_folder(trainer_name, env, monkeypatch)
    images = join(env["nnUNet_raw"], "Dataset502_SynthKidneyCT", "imagesTs")
    stock = tmp_path / "stock"
    run(["nnUNetv2_predict", "-i", images, "-o", stock, "-d", COLLECTION_ID, "-c", "3d_fullres", "-tr", trainer_name,
         "-p", PLANS, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env, {"nnUNet_universal_task": TASK})

    if trainer_name == "UniSegTrainer":  # without the variable: one message naming it and every task, any channels
        petct = join(env["nnUNet_raw"], "Dataset503_SynthPETCT", "imagesTs")
        proc = subprocess.run([os.path.join(BIN, "nnUNetv2_predict"), "-i", petct, "-o", tmp_path / "no_task", "-d",
                               COLLECTION_ID, "-c", "3d_fullres", "-tr", trainer_name, "-p", PLANS, "-f", "0", "-device",
                               "cpu", "-npp", "1", "-nps", "1"], env=env, capture_output=True, text=True)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert last.startswith("nnUNetv2_predict: this is a universal model") and "needs nnUNet_universal_task=<task>" \
            in last and "SynthPETCT (2 channel(s): CT, PET)" in last
        assert not (tmp_path / "no_task").exists()  # the folder nnUNetv2_predict made is removed again

    from nnunetv2_universal.inference.predictor import UniversalPredictor
    predictor = UniversalPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model, (0,), "checkpoint_final.pth")
    predictor.select_task(TASK)
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    predictor.predict_from_files_sequential(images, str(plugin), False, True, None)
    cases = sorted(f for f in os.listdir(images) if f.endswith("_0000.nii.gz"))
    assert cases
    for case in cases:
        name = case.replace("_0000.nii.gz", ".nii.gz")
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(stock / name)))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(plugin / name)))
        assert ours.shape == sitk.GetArrayFromImage(sitk.ReadImage(join(images, case))).shape
        assert set(np.unique(ours)) <= {0, 1}  # the task's own labels
        assert np.array_equal(ours, reference)
