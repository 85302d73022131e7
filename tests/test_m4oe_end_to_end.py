"""M4oE's two phases through the real console scripts on the tiny synthetic CT + MR collection: phase 1 (masked
image modelling, experts routed by modality), phase 2 with stock -pretrained_weights (gates reset, per-dataset
heads), prediction of a task, and evaluation. Every training run is SIGKILLed mid-epoch and resumed with --c."""
from __future__ import annotations

import os

import pytest
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import COLLECTION_ID, PLANS, load_final_checkpoint, run, train_killed_and_resumed

pytestmark = pytest.mark.integration
RESULTS = f"Dataset{COLLECTION_ID}_Synth"


def test_two_phases_predict_and_evaluate(collection_workspace):
    env = collection_workspace["env"]
    train_env = {"nnUNet_n_proc_DA": "0"}
    fold1 = join(env["nnUNet_results"], RESULTS, f"M4oEPretrainTrainer_test__{PLANS}__3d_fullres", "fold_0")
    train_killed_and_resumed(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", "M4oEPretrainTrainer_test",
                              "-p", PLANS, "-device", "cpu"], env, fold1, train_env)
    weights1 = load_final_checkpoint(fold1)["network_weights"]
    assert any(k.startswith("reconstruction.") for k in weights1)

    model = join(env["nnUNet_results"], RESULTS, f"M4oETrainer_test__{PLANS}__3d_fullres")
    proc = train_killed_and_resumed(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", "M4oETrainer_test",
                                     "-p", PLANS, "-device", "cpu", "-pretrained_weights",
                                     join(fold1, "checkpoint_final.pth")], env, join(model, "fold_0"), train_env)
    assert "Loading pretrained weights from file" in proc.killed_output
    load_final_checkpoint(join(model, "fold_0"))
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


def test_swin_unet_as_nnunet_2d_configuration(collection_workspace, swin_workspace):
    """M4oE's own network: the collection planned for `-c 2d` with a shrunken m4oe_swin template, trained with
    stock nnUNetv2_train and predicted per task."""
    env = collection_workspace["env"]
    # whole slices, as the paper: every preprocessed slice fits the 32 x 32 patch (spacing coarsened per task)
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    data = join(env["nnUNet_preprocessed"], RESULTS, "M4oESwinTest_2d")
    dataset = infer_dataset_class(data)(data)
    in_plane = max(max(dataset.load_case(k)[0].shape[2:]) for k in dataset.identifiers)  # (c, z, y, x)
    original = max(max(shape[1:]) for m in collection_workspace["members"] for shape in
                   load_json(join(env["nnUNet_preprocessed"], m, "dataset_fingerprint.json"))["shapes_after_crop"])
    assert in_plane <= 32 < original
    fold = join(env["nnUNet_results"], RESULTS, "M4oESwinTrainer_test__M4oESwinTest__2d", "fold_0")
    train_killed_and_resumed(["nnUNetv2_train", COLLECTION_ID, "2d", "0", "-tr", "M4oESwinTrainer_test", "-p",
                              "M4oESwinTest", "-device", "cpu"], env, fold, {"nnUNet_n_proc_DA": "0"})
    optimizer = load_final_checkpoint(fold)["optimizer_state"]["param_groups"][0]
    assert "amsgrad" in optimizer and optimizer["weight_decay"] == 1e-4  # the paper's AdamW, not nnU-Net's SGD
    members = collection_workspace["members"]
    brain = next(m for m in members if "Brain" in m)
    out = join(collection_workspace["root"], "swin_pred")
    run(["nnUNetv2_universal_predict", "-i", join(env["nnUNet_raw"], brain, "imagesTs"), "-o", out, "-d",
         COLLECTION_ID, "-tr", "M4oESwinTrainer_test", "-p", "M4oESwinTest", "-c", "2d", "-f", "0", "--task",
         "SynthBrainMR", "-device", "cpu", "--disable_tta"], env)
    predictions = sorted(f for f in os.listdir(out) if f.endswith(".nii.gz"))
    assert predictions
    import SimpleITK as sitk
    for name in predictions:  # written back at the original geometry
        image = sitk.ReadImage(join(env["nnUNet_raw"], brain, "imagesTs", name.replace(".nii.gz", "_0000.nii.gz")))
        prediction = sitk.ReadImage(join(out, name))
        assert prediction.GetSize() == image.GetSize() and prediction.GetSpacing() == image.GetSpacing()
