"""Hermes through the real console scripts on the tiny synthetic collection (CT, PET/CT and 4-channel MR tasks):
train (SIGKILLed mid-epoch, resumed with --c), predict one task of the registry without naming its labels, evaluate."""
from __future__ import annotations

import os

import pytest
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import COLLECTION_ID, PLANS, load_final_checkpoint, run, train_killed_and_resumed

pytestmark = pytest.mark.integration


def test_hermes_trains_predicts_and_evaluates(collection_workspace):
    env = collection_workspace["env"]
    model = join(env["nnUNet_results"], f"Dataset{COLLECTION_ID}_Synth", f"HermesTrainer_test__{PLANS}__3d_fullres")
    train_killed_and_resumed(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", "HermesTrainer_test", "-p",
                              PLANS, "-device", "cpu"], env, join(model, "fold_0"), {"nnUNet_n_proc_DA": "0"})
    load_final_checkpoint(join(model, "fold_0"))
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
