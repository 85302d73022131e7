"""End to end through the real console scripts: plan/preprocess (fixture), train, resume with --c, predict with
--task and --all-tasks, evaluate with nnU-Net's evaluator."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import COLLECTION_ID, PLANS, run

pytestmark = pytest.mark.integration
TRAINER = "UniSegTrainer_test"


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


@pytest.fixture(scope="module")
def trained(collection_workspace):
    env = collection_workspace["env"]
    run(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu"], env,
        {"nnUNet_n_proc_DA": "0"})
    model = os.path.join(env["nnUNet_results"], "Dataset900_Synth", f"{TRAINER}__{PLANS}__3d_fullres")
    return dict(collection_workspace, model=model)


def test_preprocessed_collection_keeps_member_settings(collection_workspace):
    pre = os.path.join(collection_workspace["env"]["nnUNet_preprocessed"], "Dataset900_Synth")
    plans = json.load(open(os.path.join(pre, f"{PLANS}.json")))
    tasks = plans["configurations"]["3d_fullres"]["universal_tasks"]
    assert tasks["SynthLiverCT"]["spacing"] == [2.5, 1.2, 1.2]
    assert tasks["SynthPETCT"]["spacing"] == [3.0, 2.0, 2.0]
    assert tasks["SynthPETCT"]["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization"]
    ct = tasks["SynthLiverCT"]["foreground_intensity_properties_per_channel"]["0"]
    assert (ct["percentile_00_5"], ct["percentile_99_5"], ct["mean"], ct["std"]) == (-325, 325, -325, 650)
    assert tasks["SynthBrainMR"]["use_mask_for_norm"] == [True] * 4  # zero outside the head
    splits = json.load(open(os.path.join(pre, "splits_final.json")))
    assert len(splits) == 5 and not set(splits[0]["train"]) & set(splits[0]["val"])
    dataset = json.load(open(os.path.join(pre, "dataset.json")))
    assert set(dataset["universal"]["cases"].values()) == {"SynthLiverCT", "SynthPETCT", "SynthBrainMR"}
    # CT window applied: every CT voxel in [0, 1]; 4-channel case preprocessed with 4 channels
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    ds = nnUNetDatasetBlosc2(os.path.join(pre, f"{PLANS}_3d_fullres"))
    ct_case = next(k for k in ds.identifiers if k.startswith("SynthLiverCT"))
    data, seg, _, props = ds.load_case(ct_case)
    assert data.shape[0] == 1 and 0.0 <= float(np.min(data[:])) and float(np.max(data[:])) <= 1.0
    assert set(np.unique(seg[:])) <= {-1, 0, 1, 2}
    brain = next(k for k in ds.identifiers if k.startswith("SynthBrainMR"))
    assert ds.load_case(brain)[0].shape[0] == 4


def test_train_resume_predict_evaluate(trained, tmp_path):
    env, model = trained["env"], trained["model"]
    checkpoint = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                            weights_only=False)
    assert checkpoint["trainer_name"] == TRAINER and checkpoint["current_epoch"] == 1
    assert len(checkpoint["logging"]["task_pseudo_dice"]) == 1
    summary = json.load(open(os.path.join(model, "fold_0", "validation", "summary_per_task.json")))
    assert set(summary["tasks"]) <= {"SynthLiverCT", "SynthPETCT", "SynthBrainMR"} and summary["tasks"]
    assert os.path.isfile(os.path.join(model, "fold_0", "progress.png"))

    # resume: --c picks up the final checkpoint (training already complete) and re-runs validation
    proc = run(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
                "--c"], env, {"nnUNet_n_proc_DA": "0"})
    assert "Mean validation Dice over tasks" in proc.stdout

    raw = env["nnUNet_raw"]
    liver_in = os.path.join(raw, trained["members"][0], "imagesTs")
    common = ["-d", COLLECTION_ID, "-tr", TRAINER, "-p", PLANS, "-c", "3d_fullres", "-f", "0", "-device", "cpu",
              "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    single = tmp_path / "single"
    run(["nnUNetv2_universal_predict", "-i", liver_in, "-o", single, "--task", "SynthLiverCT", *common], env)
    merged_dir = tmp_path / "merged"
    run(["nnUNetv2_universal_predict", "-i", liver_in, "-o", merged_dir, "--all-tasks", *common], env)

    case = sorted(os.listdir(liver_in))[0].replace("_0000.nii.gz", ".nii.gz")
    task_seg = _read(str(single / case))
    merged = _read(str(merged_dir / case))
    labels = json.load(open(merged_dir / "labels.json"))
    # one compatible task for a 1-channel CT here: the merged map is the task's map in global labels
    expected = np.zeros_like(task_seg)
    expected[task_seg == 1] = labels["SynthLiverCT:organ"]
    expected[task_seg == 2] = labels["SynthLiverCT:lesion"]
    np.testing.assert_array_equal(merged, expected)
    assert set(np.unique(task_seg)) <= {0, 1, 2}  # task-local labels

    # nnU-Net's evaluator on the task-local output (the predictor writes the task's dataset.json next to it)
    gt = os.path.join(raw, trained["members"][0], "labelsTs")
    run(["nnUNetv2_evaluate_folder", gt, single, "-djfile", single / "dataset.json", "-pfile", single / "plans.json",
         "-np", "1"], env)
    result = json.load(open(single / "summary.json"))
    assert set(result["mean"]) == {"1", "2"}


def test_unknown_task_lists_valid_ones(trained, tmp_path):
    env = trained["env"]
    with pytest.raises(AssertionError, match="SynthLiverCT, SynthPETCT, SynthBrainMR"):
        run(["nnUNetv2_universal_predict", "-i", tmp_path, "-o", tmp_path / "o", "-d", COLLECTION_ID, "-tr", TRAINER,
             "-p", PLANS, "-device", "cpu", "--task", "Liver"], env)
