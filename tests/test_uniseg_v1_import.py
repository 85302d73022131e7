"""The released UniSeg checkpoint, ready to segment: a v1-format checkpoint (built at a small size from the
documented key map) is imported into a model folder, then the real console scripts predict one task, all tasks of a
modality and, through stock nnUNetv2_predict, a 4-channel MR task, with nnUNet_results as the only nnU-Net folder.
The 11-task table is checked against the reference notes' per-task table."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import BIN, run
from test_v1_checkpoint import v1_state_dict

pytestmark = pytest.mark.integration

# shared/reference/uniseg.md §6 (the 11 upstream datasets): channels, foreground classes, target spacing (z, y, x)
REFERENCE_TABLE = [(["CT"], 2, (3, 1.5, 1.5)), (["CT"], 2, (3, 1.5, 1.5)), (["CT"], 2, (3, 1.5, 1.5)),
                   (["CT"], 2, (3, 1.5, 1.5)), (["CT"], 1, (3, 1.5, 1.5)), (["CT"], 1, (3, 1.5, 1.5)),
                   (["CT"], 1, (3, 1.5, 1.5)), (["CT"], 1, (4, 2, 2)), (["T2"], 1, (3, 1.5, 1.5)),
                   (["T1", "T1ce", "T2", "FLAIR"], 3, (1, 1, 1)), (["CTres", "SUV"], 1, (8, 4, 4))]
REFERENCE_NOTES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "uniseg.md")
SMALL = dict(features=[4, 8, 8, 12], kernels=[[1, 3, 3]] + [[3, 3, 3]] * 3,
             strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], num_classes=4, prompt=[2, 2, 2])


def _reference_rows():
    """Rows of the notes' table when the notes are next to the repository (they are not in a clean clone)."""
    if not os.path.isfile(REFERENCE_NOTES):
        return None
    text = open(REFERENCE_NOTES, encoding="utf-8").read()
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| [^|]+ \| ([^|]+) \| ([^|]+) \| ([\d., ]+) \|", text, re.M)
    return [([c.split()[1] for c in channels.split(",")], len(re.findall(r"\d+ \(?[a-z]", labels)),
             tuple(float(v) for v in spacing.split(","))) for _, channels, labels, spacing in rows]


def test_paper_table_matches_the_reference():
    from nnunetv2_universal.finetuning.uniseg11_tasks import PAPER_TASKS, paper_registry
    names = {"CTres": "CT", "SUV": "PET"}
    ours = [([names.get(c, c) for c in ch], n, sp) for ch, n, sp in REFERENCE_TABLE]
    assert [(list(t.channels), len(t.labels), t.spacing) for t in PAPER_TASKS] == \
        [(ch, n, tuple(float(v) for v in sp)) for ch, n, sp in ours]
    rows = _reference_rows()
    if rows is not None:
        assert [(ch, sp) for ch, _, sp in rows] == [(ch, tuple(float(v) for v in sp)) for ch, _, sp in REFERENCE_TABLE]
    registry = paper_registry()
    assert registry.channel_counts == [1, 2, 4] and registry.max_num_classes == 4
    assert [t.normalization for t in registry][9:] == [["zscore"] * 4, ["ct_window", "zscore"]]
    assert [t.use_mask_for_norm for t in PAPER_TASKS][9] == (True,) * 4  # BraTS: z-score inside the brain


def _write(path, array, spacing):
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1import")
    results = root / "results"
    results.mkdir()
    trainer_folder = run(["nnUNetv2_universal_trainer_folder"], {"PATH": f"{BIN}:/usr/bin:/bin"}).stdout.strip()
    subprocess_env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
                      "nnUNet_results": str(results), "nnUNet_extTrainer": trainer_folder, "OMP_NUM_THREADS": "1",
                      "nnUNet_def_n_proc": "1"}
    model_file = root / "model_final_checkpoint.model"
    torch.save({"state_dict": v1_state_dict(num_tasks=11, **SMALL), "epoch": 1000}, model_file)
    out = run(["nnUNetv2_universal_import_uniseg_v1", "-i", model_file, "-d", "620"], subprocess_env).stdout
    folder = results / "Dataset620_UniSeg11" / "UniSegTrainer__UniSegPlans__3d_fullres"
    assert str(folder) in out
    ct, mr = root / "ct", root / "mr"
    ct.mkdir(), mr.mkdir()
    rng = np.random.default_rng(0)
    body = np.full((10, 24, 24), -1000.0)
    body[2:8, 4:20, 4:20] = rng.normal(40, 20, (6, 16, 16))
    _write(ct / "abdomen_0000.nii.gz", body, (3.0, 1.5, 1.5))
    for c in range(4):
        _write(mr / f"brain_{c:04d}.nii.gz", rng.normal(100, 30, (8, 16, 16)).clip(0), (1.0, 1.0, 1.0))
    return {"root": root, "env": subprocess_env, "folder": folder, "ct": ct, "mr": mr, "model_file": model_file}


def _seg(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_import_writes_a_complete_model_folder(imported):
    folder = imported["folder"]
    plans = json.load(open(folder / "plans.json"))
    tasks = plans["configurations"]["3d_fullres"]["universal_tasks"]
    assert list(tasks) == ["Liver", "KiTS19", "HepaticVessel", "Pancreas", "Colon", "Lung", "Spleen", "VerSe20Binary",
                           "MultiSiteProstate", "BraTS21", "AutoPETTumour"]
    assert tasks["VerSe20Binary"]["spacing"] == [4.0, 2.0, 2.0] and tasks["AutoPETTumour"]["normalization_schemes"] \
        == ["CTNormalization", "ZScoreNormalization"]
    assert tasks["Liver"]["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] == -325.0
    assert tasks["BraTS21"]["use_mask_for_norm"] == [True] * 4
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [8, 16, 16]
    from nnunetv2_universal.finetuning.weights import load_checkpoint_safely
    checkpoint = load_checkpoint_safely(str(folder / "fold_0" / "checkpoint_final.pth"))
    assert checkpoint["trainer_name"] == "UniSegTrainer" and tuple(checkpoint["network_weights"]["prompt"].shape) \
        == (1, 11, 2, 2, 2)
    listed = run(["nnUNetv2_universal_predict", "-d", "620", "--list-tasks"], imported["env"]).stdout
    assert "BraTS21" in listed and "AutoPETTumour" in listed


def test_predict_a_task_all_ct_tasks_and_stock_predict_from_the_results_folder_alone(imported):
    env, root = imported["env"], imported["root"]
    common = ["-d", "620", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"]
    run(["nnUNetv2_universal_predict", "-i", imported["ct"], "-o", root / "liver", "--task", "Liver", *common], env)
    seg = _seg(root / "liver" / "abdomen.nii.gz")
    assert seg.shape == (10, 24, 24) and set(np.unique(seg)) <= {0, 1, 2}
    assert json.load(open(root / "liver" / "dataset.json"))["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    out = run(["nnUNetv2_universal_predict", "-i", imported["ct"], "-o", root / "all", "--all-tasks", *common],
              env).stdout
    # a CT image runs the 8 CT tasks, not the T2 prostate task
    assert "abdomen: Liver, KiTS19, HepaticVessel, Pancreas, Colon, Lung, Spleen, VerSe20Binary" in out
    labels = json.load(open(root / "all" / "labels.json"))
    assert _seg(root / "all" / "abdomen.nii.gz").shape == (10, 24, 24) and "Liver" in json.dumps(labels)
    run(["nnUNetv2_predict", "-i", imported["mr"], "-o", root / "stock", "-d", "620", "-c", "3d_fullres", "-tr",
         "UniSegTrainer", "-p", "UniSegPlans", "-f", "0", *common], env, {"nnUNet_universal_task": "BraTS21"})
    seg = _seg(root / "stock" / "brain.nii.gz")
    assert seg.shape == (8, 16, 16) and set(np.unique(seg)) <= {0, 1, 2, 3}


def test_fine_tuning_starts_from_the_imported_folder(imported, tmp_path, monkeypatch):
    from nnunetv2_universal.finetuning.plans import transfer_plans
    from nnunetv2_universal.finetuning.weights import export_backbone
    weights = export_backbone(str(imported["folder"] / "fold_0" / "checkpoint_final.pth"), str(tmp_path / "bb.pth"))
    assert not any(k.startswith(("prompt", "fuse.")) for k in weights)
    target = tmp_path / "preprocessed" / "Dataset700_BTCV"
    target.mkdir(parents=True)
    json.dump({"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1}, "file_ending": ".nii.gz"},
              open(target / "dataset.json", "w"))
    json.dump({"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {"data_identifier": "x"}}},
              open(target / "nnUNetPlans.json", "w"))
    import nnunetv2_universal.finetuning.plans as plans_module
    monkeypatch.setattr(plans_module, "nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(plans_module, "maybe_convert_to_dataset_name", lambda d: "Dataset700_BTCV")
    plans = transfer_plans(str(imported["folder"]), "700", patch_size=[8, 16, 16])
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("UniSegBackbone") and arch["arch_kwargs"]["stem_channels"] == [1, 2, 4]


@pytest.mark.parametrize("what,message", [("tasks", "universal prompt has 3 task channel(s); the released UniSeg"),
                                          ("keys", "is not a UniSeg v1 checkpoint: unknown key")])
def test_a_checkpoint_that_is_not_the_release_is_refused(imported, tmp_path, what, message):
    sd = v1_state_dict(num_tasks=3 if what == "tasks" else 11, **SMALL)
    if what == "keys":
        sd["head.fc.weight"] = torch.zeros(2, 2)
    model_file = tmp_path / "other.model"
    torch.save({"state_dict": sd}, model_file)
    import subprocess
    proc = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_import_uniseg_v1"), "-i", str(model_file), "-d",
                           "621"], env=imported["env"], capture_output=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any(d.startswith("Dataset621") for d in os.listdir(imported["env"]["nnUNet_results"]))
