"""Hermes through the real console scripts on the tiny synthetic collection (CT, PET/CT and 4-channel MR tasks):
train (SIGKILLed mid-epoch, resumed with --c), predict one task of the registry without naming its labels, evaluate."""
from __future__ import annotations

import os

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import COLLECTION_ID, PLANS, load_final_checkpoint, run, train_killed_and_resumed

pytestmark = pytest.mark.integration


def test_hermes_trains_predicts_and_evaluates(collection_workspace):
    env = collection_workspace["env"]
    model = join(env["nnUNet_results"], f"Dataset{COLLECTION_ID}_Synth", f"HermesTrainer_test__{PLANS}__3d_fullres")
    train_killed_and_resumed(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", "HermesTrainer_test", "-p",
                              PLANS, "-device", "cpu"], env, join(model, "fold_0"), {"nnUNet_n_proc_DA": "0"})
    checkpoint = load_final_checkpoint(join(model, "fold_0"))
    # the reference's optimiser (LAMB) and the EMA weights in the final checkpoint (no raw copy left)
    group = checkpoint["optimizer_state"]["param_groups"][0]
    assert {"bias_correction", "max_grad_norm"} <= set(group) and group["weight_decay"] == 1e-5
    assert "training_weights" not in checkpoint
    summary = load_json(join(model, "fold_0", "validation", "summary_per_task.json"))
    assert set(summary["tasks"]) >= {"SynthLiverCT", "SynthBrainMR"}
    brain = next(m for m in collection_workspace["members"] if "Brain" in m)
    out = join(collection_workspace["root"], "hermes_pred")
    run(["nnUNetv2_universal_predict", "-i", join(env["nnUNet_raw"], brain, "imagesTs"), "-o", out, "-d",
         COLLECTION_ID, "-tr", "HermesTrainer_test", "-p", PLANS, "-f", "0", "--task", "SynthBrainMR", "-device",
         "cpu", "--disable_tta"], env)
    assert [f for f in os.listdir(out) if f.endswith(".nii.gz")]
    run(["nnUNetv2_evaluate_simple", join(env["nnUNet_raw"], brain, "labelsTs"), out, "-l", "1", "2", "3"], env)
    assert os.path.isfile(join(out, "summary.json"))
    # a subset of the task's labels: only those priors are computed, only those labels can appear
    subset = join(collection_workspace["root"], "hermes_pred_subset")
    run(["nnUNetv2_universal_predict", "-i", join(env["nnUNet_raw"], brain, "imagesTs"), "-o", subset, "-d",
         COLLECTION_ID, "-tr", "HermesTrainer_test", "-p", PLANS, "-f", "0", "--task", "SynthBrainMR", "--labels",
         "edema", "enhancing", "-device", "cpu", "--disable_tta"], env)
    import numpy as np
    import SimpleITK as sitk
    for f in (f for f in os.listdir(subset) if f.endswith(".nii.gz")):
        assert 2 not in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(join(subset, f))))


class _LeftStructureModel(torch.nn.Module):
    """Stands in for a model that learned a left-only structure: foreground where the image is bright, but only
    in the left half (low x)."""

    def forward(self, x, condition=None):
        left = torch.zeros_like(x[:, :1])
        left[..., : x.shape[-1] // 2] = 1
        foreground = torch.where((x[:, :1] > 0.5) & (left > 0), 10.0, -10.0)
        return torch.cat((torch.zeros_like(foreground), foreground, torch.full_like(foreground, -20.0),
                          torch.full_like(foreground, -20.0)), 1)


def test_hermes_never_mirrors_so_a_left_only_structure_stays_on_its_side(collection_workspace, monkeypatch):
    """Hermes' datasets label left and right organs: no mirroring in training or in test-time augmentation. The
    trainer's own predictor keeps a left-only structure on the left; with UniSeg's (0, 1, 2) test-time mirroring
    the same model's prediction would lose it."""
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    from nnunetv2_universal.training.hermes_trainer import HermesTrainer
    from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer
    env = collection_workspace["env"]
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    pre = join(env["nnUNet_preprocessed"], f"Dataset{COLLECTION_ID}_Synth")
    plans, dataset_json = load_json(join(pre, f"{PLANS}.json")), load_json(join(pre, "dataset.json"))
    image = torch.zeros(1, 16, 32, 32)
    image[:, 6:10, 12:20, 4:10] = 1  # a bright structure in the left half only
    image[:, 6:10, 12:20, 22:28] = 1  # and its bright mirror image, which is not the structure
    predicted, trainer_schedule = {}, {}
    for trainer_class in (HermesTrainer, UniSegTrainer):
        trainer = trainer_class(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                                torch.device("cpu"))
        _, _, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        trainer_schedule[trainer_class] = (trainer.num_epochs, trainer.num_iterations_per_epoch)
        predictor = UniversalPredictor(use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
        predictor.manual_initialization(_LeftStructureModel(), trainer.plans_manager, trainer.configuration_manager,
                                        None, dataset_json, trainer_class.__name__,
                                        trainer.inference_allowed_mirroring_axes)
        predictor.select_task("SynthKidneyCT")
        predicted[trainer_class] = (mirror_axes, predictor.predict_sliding_window_return_logits(image).argmax(0))
    axes, hermes = predicted[HermesTrainer]
    assert axes is None
    assert trainer_schedule[HermesTrainer] == (200, 400)  # the reference's 200 epochs x 400 iterations
    assert hermes[6:10, 12:20, 4:10].eq(1).all() and hermes[..., 16:].eq(0).all()
    axes, uniseg = predicted[UniSegTrainer]
    assert axes == (0, 1, 2) and not uniseg[6:10, 12:20, 4:10].eq(1).all()
