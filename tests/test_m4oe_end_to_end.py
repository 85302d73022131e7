"""M4oE's two phases through the real console scripts on the tiny synthetic CT + MR collection: phase 1 (masked
image modelling, experts routed by modality), phase 2 with stock -pretrained_weights (gates reset, per-dataset
heads), prediction of a task, and evaluation."""
from __future__ import annotations

import os

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import COLLECTION_ID, PLANS, run

pytestmark = pytest.mark.integration
RESULTS = f"Dataset{COLLECTION_ID}_Synth"


def test_two_phases_predict_and_evaluate(collection_workspace):
    env = collection_workspace["env"]
    train_env = {"nnUNet_n_proc_DA": "0"}
    run(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", "M4oEPretrainTrainer_test", "-p", PLANS,
         "-device", "cpu"], env, train_env)
    phase1 = join(env["nnUNet_results"], RESULTS, f"M4oEPretrainTrainer_test__{PLANS}__3d_fullres", "fold_0",
                  "checkpoint_final.pth")
    weights1 = torch.load(phase1, map_location="cpu", weights_only=False)["network_weights"]
    assert any(k.startswith("reconstruction.") for k in weights1)

    proc = run(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", "M4oETrainer_test", "-p", PLANS,
                "-device", "cpu", "-pretrained_weights", phase1], env, train_env)
    assert "Loading pretrained weights from file" in proc.stdout
    model = join(env["nnUNet_results"], RESULTS, f"M4oETrainer_test__{PLANS}__3d_fullres")
    summary = load_json(join(model, "fold_0", "validation", "summary_per_task.json"))
    assert set(summary["tasks"]) >= {"SynthLiverCT", "SynthBrainMR"}

    members = collection_workspace["members"]
    liver = next(m for m in members if "Liver" in m)
    out = join(collection_workspace["root"], "m4oe_pred")
    run(["nnUNetv2_universal_predict", "-i", join(env["nnUNet_raw"], liver, "imagesTs"), "-o", out, "-d",
         COLLECTION_ID, "-tr", "M4oETrainer_test", "-p", PLANS, "-f", "0", "--task", "SynthLiverCT", "-device", "cpu",
         "--disable_tta"], env)
    predictions = [f for f in os.listdir(out) if f.endswith(".nii.gz")]
    assert predictions
    proc = run(["nnUNetv2_evaluate_simple", join(env["nnUNet_raw"], liver, "labelsTs"), out, "-l", "1", "2"], env)
    assert os.path.isfile(join(out, "summary.json")), proc.stdout
