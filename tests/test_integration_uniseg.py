"""End to end through the real console scripts: plan/preprocess (fixture), train (killed by SIGKILL mid-epoch and
resumed with --c), predict with --task and --all-tasks, evaluate with nnU-Net's evaluator."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import COLLECTION_ID, PLANS, load_final_checkpoint, run, train_killed_and_resumed

pytestmark = pytest.mark.integration
TRAINER = "UniSegTrainer_test"


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


@pytest.fixture(scope="module")
def trained(collection_workspace):
    env = collection_workspace["env"]
    model = os.path.join(env["nnUNet_results"], "Dataset900_Synth", f"{TRAINER}__{PLANS}__3d_fullres")
    train_killed_and_resumed(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", TRAINER, "-p", PLANS,
                              "-device", "cpu"], env, os.path.join(model, "fold_0"), {"nnUNet_n_proc_DA": "0"})
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
    assert set(dataset["universal"]["cases"].values()) == {"SynthLiverCT", "SynthKidneyCT", "SynthPETCT",
                                                           "SynthBrainMR"}
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
    checkpoint = load_final_checkpoint(os.path.join(model, "fold_0"))
    assert checkpoint["trainer_name"] == TRAINER
    assert len(checkpoint["logging"]["task_pseudo_dice"]) == 2
    summary = json.load(open(os.path.join(model, "fold_0", "validation", "summary_per_task.json")))
    cases = json.load(open(os.path.join(model, "dataset.json")))["universal"]["cases"]
    assert set(summary["tasks"]) <= set(cases.values())
    assert summary["tasks"]
    assert os.path.isfile(os.path.join(model, "fold_0", "progress.png"))

    # resume: --c picks up the final checkpoint (training already complete) and re-runs validation
    # (the default device is cuda: without a GPU the plugin's trainers train on the CPU with a notice)
    proc = run(["nnUNetv2_train", COLLECTION_ID, "3d_fullres", "0", "-tr", TRAINER, "-p", PLANS, "--c"], env,
               {"nnUNet_n_proc_DA": "0", "CUDA_VISIBLE_DEVICES": ""})
    assert "No CUDA device available: training on the CPU" in proc.stderr
    assert "Mean validation Dice over tasks" in proc.stdout
    assert "Final validation on the fold's validation cases with 1 worker process(es)" in proc.stdout

    raw = env["nnUNet_raw"]
    members = dict(zip(["SynthLiverCT", "SynthKidneyCT", "SynthPETCT", "SynthBrainMR"], trained["members"]))
    liver_in = os.path.join(raw, members["SynthLiverCT"], "imagesTs")
    common = ["-d", COLLECTION_ID, "-tr", TRAINER, "-p", PLANS, "-c", "3d_fullres", "-f", "0", "-device", "cpu",
              "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    single = tmp_path / "single"
    # the default device is cuda: without a GPU (hidden here) the plugin predicts on the CPU with a one-line notice
    # and with no -npp/-nps on a CPU, everything runs in this process (no worker start-ups)
    no_device = common[:common.index("-device")] + ["--disable_progress_bar"]
    proc = run(["nnUNetv2_universal_predict", "-i", liver_in, "-o", single, "--task", "SynthLiverCT", *no_device], env,
               {"CUDA_VISIBLE_DEVICES": ""})
    assert "No CUDA device available: predicting on the CPU" in proc.stderr
    assert "done with" not in proc.stdout  # nnU-Net's worker path says it per case
    assert "not found in nnunetv2.training.nnUNetTrainer" not in proc.stdout  # our trainers are found first
    # (stock nnUNetv2_predict with $nnUNet_universal_task: test_stock_predict_every_trainer.py, every trainer)
    kidney = tmp_path / "kidney"
    workers = common[:common.index("-npp")] + ["-npp", "1", "-nps", "1", "--disable_progress_bar"]  # worker pools
    proc = run(["nnUNetv2_universal_predict", "-i", liver_in, "-o", kidney, "--task", "SynthKidneyCT", *workers], env)
    assert "GPU prediction completed" not in proc.stdout and "done with" in proc.stdout
    # --all-tasks on a folder with a 1-channel CT case and a 2-channel PET/CT case
    mixed_in = tmp_path / "mixed_in"
    mixed_in.mkdir()
    for task in ("SynthLiverCT", "SynthPETCT"):
        folder = os.path.join(raw, members[task], "imagesTs")
        for f in os.listdir(folder):
            os.symlink(os.path.join(folder, f), mixed_in / f)
    merged_dir = tmp_path / "merged"
    run(["nnUNetv2_universal_predict", "-i", mixed_in, "-o", merged_dir, "--all-tasks", *common], env)

    from nnunetv2_universal.inference.merge import GlobalLabels, merge_task_segmentations
    from nnunetv2_universal.registry import TaskRegistry
    registry = TaskRegistry.from_dataset_json(json.load(open(os.path.join(model, "dataset.json"))))
    case = sorted(os.listdir(liver_in))[0].replace("_0000.nii.gz", ".nii.gz")
    task_seg = _read(str(single / case))
    assert set(np.unique(task_seg)) <= {0, 1, 2}  # task-local labels
    one_by_one = merge_task_segmentations({0: task_seg, 1: _read(str(kidney / case))}, GlobalLabels(registry))
    # the two CT tasks share preprocessing: one encoder pass per tile, merged = the tasks run one by one
    np.testing.assert_array_equal(_read(str(merged_dir / case)), one_by_one)
    labels = json.load(open(merged_dir / "labels.json"))
    assert labels["SynthLiverCT:lesion"] == 2 and labels["SynthKidneyCT:kidney"] == 3
    pet_case = [f for f in os.listdir(merged_dir) if f.startswith("synthpetct")][0]
    assert set(np.unique(_read(str(merged_dir / pet_case)))) <= {0, labels["SynthPETCT:lesion"]}
    # per-task evaluation of the merged output: split back to task-local labels, nnU-Net's evaluator
    gt = os.path.join(raw, members["SynthLiverCT"], "labelsTs")
    run(["nnUNetv2_universal_evaluate_all_tasks", "-pred", merged_dir, "-ref", gt, "--task", "SynthLiverCT"], env)
    split = merged_dir / "SynthLiverCT"
    np.testing.assert_array_equal(_read(str(split / case)), np.where(one_by_one == 3, 0, one_by_one))
    assert set(json.load(open(split / "summary.json"))["mean"]) == {"1", "2"}

    # nnU-Net's evaluator on the task-local output (the predictor writes the task's dataset.json next to it)
    run(["nnUNetv2_evaluate_folder", gt, single, "-djfile", single / "dataset.json", "-pfile", single / "plans.json",
         "-np", "1"], env)
    result = json.load(open(single / "summary.json"))
    assert set(result["mean"]) == {"1", "2"}


def test_unknown_task_lists_valid_ones(trained, tmp_path):
    env = trained["env"]
    with pytest.raises(AssertionError, match="SynthLiverCT, SynthKidneyCT, SynthPETCT, SynthBrainMR"):
        run(["nnUNetv2_universal_predict", "-i", tmp_path, "-o", tmp_path / "o", "-d", COLLECTION_ID, "-tr", TRAINER,
             "-p", PLANS, "-device", "cpu", "--task", "Liver"], env)


def test_finetune_from_upstream_checkpoint(trained, tmp_path):
    """Stock flow: plan the target with nnU-Net, transfer plans, export the backbone, nnUNetv2_train
    -pretrained_weights (loaded: compared tensor by tensor), stock nnUNetv2_predict."""
    env, model = trained["env"], trained["model"]
    target = "501"
    run(["nnUNetv2_plan_and_preprocess", "-d", target, "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--no_pbar"],
        env)
    run(["nnUNetv2_universal_transfer_plans", "-s", COLLECTION_ID, "-t", target, "-sp", PLANS, "-patch", "16", "32",
         "32"], env)
    backbone = tmp_path / "backbone.pth"
    run(["nnUNetv2_universal_export_backbone", "-i", os.path.join(model, "fold_0", "checkpoint_final.pth"),
         "-o", backbone, "-c", "1"], env)
    exported = torch.load(backbone, map_location="cpu", weights_only=True)["network_weights"]
    assert "prompt" not in exported and not any(k.startswith("fuse.") or ".seg_layers." in k for k in exported)
    upstream = load_final_checkpoint(os.path.join(model, "fold_0"))["network_weights"]
    key = "decoder.transpconvs.0.weight"
    assert exported[key].shape[0] == upstream[key].shape[0] - 1
    assert torch.equal(exported[key], upstream[key][:-1])

    trainer = "UniSegFinetuneTrainer_test"  # learning rate 0: trained weights must equal the loaded ones
    folder = os.path.join(env["nnUNet_results"], trained["members"][0], f"{trainer}__UniSegFinetunePlans__3d_fullres")
    train_killed_and_resumed(["nnUNetv2_train", target, "3d_fullres", "0", "-tr", trainer, "-p", "UniSegFinetunePlans",
                              "-device", "cpu", "-pretrained_weights", backbone], env, os.path.join(folder, "fold_0"),
                             {"nnUNet_n_proc_DA": "0"})
    tuned = load_final_checkpoint(os.path.join(folder, "fold_0"), conditioned=False)["network_weights"]
    loaded = [k for k in tuned if ".seg_layers." not in k]
    assert len(loaded) == len(exported)
    for k in loaded:
        assert torch.equal(tuned[k], exported[k]), k
    assert tuned["decoder.seg_layers.0.weight"].shape[0] == 3  # new heads: background, organ, lesion

    out = tmp_path / "pred"
    images = os.path.join(env["nnUNet_raw"], trained["members"][0], "imagesTs")
    run(["nnUNetv2_predict", "-i", images, "-o", out, "-d", target, "-c", "3d_fullres", "-tr", trainer,
         "-p", "UniSegFinetunePlans", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
         "--disable_progress_bar"], env)
    assert len([f for f in os.listdir(out) if f.endswith(".nii.gz")]) == len(os.listdir(images))


PREDICTION_INPUTS = {  # damage -> part of the expected message
    "unreadable": "cannot read",
    "nan": "NaN or infinite",
    "non_orthonormal": "orthonormal",
    "extra_channel": "2 channel file(s)",
    "no_channel_suffix": "zz_case.nii.gz is not named CASE_XXXX.nii.gz",
    "only_second_channel": "zz_case_0000.nii.gz is missing",
}


@pytest.mark.parametrize("how", list(PREDICTION_INPUTS))
def test_prediction_refuses_malformed_input_before_writing(trained, tmp_path, how):
    """One good and one damaged liver case: the damaged one is named, nothing is predicted for either."""
    import shutil
    from fake_sources import damage_image
    env = trained["env"]
    source = os.path.join(env["nnUNet_raw"], trained["members"][0], "imagesTs")
    good = sorted(os.listdir(source))[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(os.path.join(source, good), inputs / good)
    bad = inputs / "zz_case_0000.nii.gz"
    shutil.copy(os.path.join(source, good), bad)
    if how == "extra_channel":
        shutil.copy(bad, inputs / "zz_case_0001.nii.gz")
    elif how in ("no_channel_suffix", "only_second_channel"):  # nnU-Net: IndexError / _0001 used as channel 0
        os.rename(bad, inputs / ("zz_case.nii.gz" if how == "no_channel_suffix" else "zz_case_0001.nii.gz"))
    else:
        damage_image(str(bad), how)
    out = tmp_path / "out"
    with pytest.raises(AssertionError) as error:
        run(["nnUNetv2_universal_predict", "-i", inputs, "-o", out, "-d", COLLECTION_ID, "-tr", TRAINER, "-p", PLANS,
             "-device", "cpu", "--task", "SynthLiverCT", "--disable_tta"], env)
    assert "zz_case" in str(error.value) and PREDICTION_INPUTS[how] in str(error.value)
    assert not out.exists() or not os.listdir(out)


@pytest.mark.parametrize("flags, message", [
    (["--task", "SynthLiverCT", "--labels", "tumor"], "has no label(s) ['tumor']"),
    (["--all-tasks", "--modality", "MRI"], "unknown modality name(s) ['MRI']; the model's modalities:"),
    (["--all-tasks", "--tasks", "Liver"], "unknown task 'Liver'"),
])
def test_prediction_refuses_unknown_names(trained, tmp_path, flags, message):
    env = trained["env"]
    source = os.path.join(env["nnUNet_raw"], trained["members"][0], "imagesTs")
    with pytest.raises(AssertionError) as error:
        run(["nnUNetv2_universal_predict", "-i", source, "-o", tmp_path / "out", "-d", COLLECTION_ID, "-tr", TRAINER,
             "-p", PLANS, "-device", "cpu"] + flags, env)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_augmentation_masks_each_tasks_own_channels(collection_workspace, monkeypatch):
    """A collection whose first member is BraTS-like (4 channels normalised inside the nonzero mask): its flags must
    not be applied to the 1- and 2-channel tasks. Every task's batches are drawn with its own mask transform."""
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer
    env = collection_workspace["env"]
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    pre = join(env["nnUNet_preprocessed"], f"Dataset{COLLECTION_ID}_Synth")
    plans, dataset_json = load_json(join(pre, f"{PLANS}.json")), load_json(join(pre, "dataset.json"))
    config = plans["configurations"]["3d_fullres"]
    config["use_mask_for_norm"] = [True] * 4  # as if the first member were BraTS
    config["universal_tasks"]["SynthBrainMR"]["use_mask_for_norm"] = [True] * 4
    trainer = UniSegTrainer(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    dl_tr, _ = trainer.get_dataloaders()
    loader = dl_tr.data_loader
    masked = {t: [c for c in ("MaskImageTransform",) if c in repr(p)] for t, p in loader.task_transforms.items()}
    brain = trainer.registry.index("SynthBrainMR")
    assert masked[brain] == ["MaskImageTransform"] and not any(v for t, v in masked.items() if t != brain)
    seen = set()
    for _ in range(12):
        batch = next(dl_tr)
        seen.add(trainer.registry.task_of_batch(batch["keys"]))
    assert seen == set(range(len(trainer.registry)))
