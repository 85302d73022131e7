"""The echo model through the real console scripts on a tiny synthetic two-view collection: build the collection,
plan and preprocess, train (EchoPromptTrainer_test), (stock nnUNetv2_predict without a view id: test_stock_predict_every_trainer.py), predict
clips and the real echo cine shipped with pydicom with nnUNetv2_universal_predict_echo, evaluate."""
from __future__ import annotations

import csv
import os

import pydicom.data
import pytest
import SimpleITK as sitk

from conftest import ECHO_COLLECTION as COLLECTION, run


def test_collection_and_training_outputs(echo_workspace):
    raw = echo_workspace["raw"]
    assert len(os.listdir(os.path.join(raw, "imagesTr"))) == 8 and len(os.listdir(os.path.join(raw, "imagesTs"))) == 4
    pre = os.path.join(echo_workspace["env"]["nnUNet_preprocessed"], f"Dataset{COLLECTION}_SynthEcho")
    assert {"EchoPlansTest.json", "nnUNetPlans.json", "splits_final.json"} <= set(os.listdir(pre))
    assert any(f.startswith("sam_queries_") for f in os.listdir(os.path.join(pre, "echo_queries")))
    fold = os.path.join(echo_workspace["env"]["nnUNet_results"], f"Dataset{COLLECTION}_SynthEcho",
                        "EchoPromptTrainer_test__EchoPlansTest__3d_fullres", "fold_0")
    assert os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
    log = open(sorted(f for f in (os.path.join(fold, n) for n in os.listdir(fold)) if "training_log" in f)[-1]).read()
    assert "view accuracy of the selected prompt keys" in log


def test_predict_echo_clips_and_dicom_cine_then_evaluate(echo_workspace):
    env, raw = echo_workspace["env"], echo_workspace["raw"]
    out = os.path.join(echo_workspace["root"], "echo_pred")
    cine = pydicom.data.get_testdata_file("examples_ybr_color.dcm")  # 30-frame ultrasound cine, 240 x 320
    run(["nnUNetv2_universal_predict_echo", "-i", os.path.join(raw, "imagesTs"), cine, "-o", out, "-d", COLLECTION,
         "-tr", "EchoPromptTrainer_test", "-p", "EchoPlansTest", "-device", "cpu"], env)
    masks = sitk.ReadImage(os.path.join(out, "examples_ybr_color_masks.nii.gz"))
    assert sitk.GetArrayFromImage(masks).shape == (30, 240, 320)
    assert masks.GetSpacing()[:2] == pytest.approx((0.5104970559477806, 0.5104970559477806))  # 0.051 cm per pixel
    with open(os.path.join(out, "examples_ybr_color_lv_area.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(30))
    assert float(rows[1]["time_ms"]) == pytest.approx(33.3, abs=0.05)
    assert all(r["view"] in ("A2C", "A4C", "PSAX") for r in rows)
    with open(os.path.join(out, "views.csv")) as f:
        views = {r["case"]: r["voted_view"] for r in csv.DictReader(f)}
    assert len(views) == 5 and "examples_ybr_color" in views

    proc = run(["nnUNetv2_universal_evaluate_echo", "-d", COLLECTION, "-pred", out], env)
    assert "| A2C/all |" in proc.stdout and "| PSAX/EchoNetPediatric |" in proc.stdout
    assert "View accuracy of the selected prompt keys" in proc.stdout
    assert os.path.isfile(os.path.join(out, "summary_echo.json"))


CACHE_CHECK = """
import glob, os, torch
import segment_anything.modeling.image_encoder as image_encoder
from nnunetv2.run.run_training import get_trainer_from_args
for f in glob.glob(os.path.join(os.environ["nnUNet_preprocessed"], "*", "echo_queries", "*.pt")):
    os.remove(f)
calls = [0]
original = image_encoder.ImageEncoderViT.forward
def counting(self, x):
    calls[0] += 1
    return original(self, x)
image_encoder.ImageEncoderViT.forward = counting
trainer = get_trainer_from_args("{collection}", "3d_fullres", 0, "EchoPromptTrainer_test", "EchoPlansTest",
                                device=torch.device("cpu"))
trainer.on_train_start()
at_start = calls[0]
trainer.on_train_epoch_start()
for _ in range(2):
    trainer.train_step(next(trainer.dataloader_train))
print("SAM_CALLS", at_start, calls[0] - at_start)
"""


def test_sam_runs_once_per_case_before_training_never_in_a_step(echo_workspace):
    proc = run(["python", "-c", CACHE_CHECK.format(collection=COLLECTION)], echo_workspace["env"],
               {"nnUNet_n_proc_DA": "0"})
    at_start, in_steps = map(int, proc.stdout.split("SAM_CALLS")[1].split())
    assert at_start >= 1 and in_steps == 0


DEFAULTS_CHECK = """
import math, torch
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2_universal.echo.augmentation import InPlaneShear
trainer = get_trainer_from_args("{collection}", "3d_fullres", 0, "EchoPromptTrainer", "EchoPlansTest",
                                device=torch.device("cpu"))
trainer.initialize()
dl_train, _ = trainer.get_dataloaders()
n_train = len(trainer.get_tr_and_val_datasets()[0].identifiers)
names = [type(t).__name__ for t in dl_train.data_loader.transforms.transforms]
names += [type(t.transform).__name__ for t in dl_train.data_loader.transforms.transforms if hasattr(t, "transform")]
print("DEFAULTS", trainer.num_iterations_per_epoch, math.ceil(n_train / trainer.batch_size), " ".join(names))
"""


def test_default_trainer_uses_one_pass_epochs_and_the_papers_augmentation(echo_workspace):
    """The default EchoPromptTrainer (not the test schedule): iterations per epoch = ceil(training clips / batch),
    and its training pipeline is the paper's (shear, left-right mirror, no nnU-Net intensity transforms)."""
    proc = run(["python", "-c", DEFAULTS_CHECK.format(collection=COLLECTION)], echo_workspace["env"],
               {"nnUNet_n_proc_DA": "0"})
    iterations, expected, *names = proc.stdout.split("DEFAULTS")[1].split()
    assert int(iterations) == int(expected) >= 1
    assert {"InPlaneShear", "MirrorTransform", "SpatialTransform"} <= set(names)
    assert not {"GaussianNoiseTransform", "GammaTransform"} & set(names)


@pytest.mark.parametrize("how, message", [("nan", "NaN or infinite"), ("non_orthonormal", "orthonormal"),
                                          ("single_frame_dicom", "a single-frame image, not a cine"),
                                          ("unknown_view", "unknown view 'PLAX'")])
def test_predict_echo_refuses_malformed_input_before_writing(echo_workspace, tmp_path, how, message):
    import shutil
    from fake_sources import damage_image
    env, raw = echo_workspace["env"], echo_workspace["raw"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    clips = sorted(os.listdir(os.path.join(raw, "imagesTs")))
    shutil.copy(os.path.join(raw, "imagesTs", clips[0]), inputs / clips[0])
    sources, flags = [inputs], []
    if how in ("nan", "non_orthonormal"):
        shutil.copy(os.path.join(raw, "imagesTs", clips[1]), inputs / "zz_clip_0000.nii.gz")
        damage_image(str(inputs / "zz_clip_0000.nii.gz"), how)
    elif how == "single_frame_dicom":
        sources.append(pydicom.data.get_testdata_file("CT_small.dcm"))
    else:
        flags = ["--view", "PLAX"]
    out = tmp_path / "out"
    with pytest.raises(AssertionError) as error:
        run(["nnUNetv2_universal_predict_echo", "-i", *sources, "-o", out, "-d", COLLECTION, "-tr",
             "EchoPromptTrainer_test", "-p", "EchoPlansTest", "-device", "cpu", *flags], env)
    assert message in str(error.value)
    assert not out.exists()


def test_validation_during_training_is_a_fixed_seeded_subset(echo_workspace, monkeypatch):
    """Fold `all` validates on the training clips: during training only `validation_batches` x batch of them, the
    same ones every epoch and every run; one-pass epochs then validate that many batches."""
    from conftest import trainer_maker
    env = echo_workspace["env"]
    for k in ("nnUNet_universal_sam_checkpoint", "nnUNet_universal_clinicalbert"):
        monkeypatch.setenv(k, env[k])
    make = trainer_maker("EchoPromptTrainer", env, f"Dataset{COLLECTION}_SynthEcho", "EchoPlansTest", "3d_fullres",
                         monkeypatch)
    subsets = []
    for _ in range(2):
        trainer = make(fold="all", validation_batches=1)
        trainer.initialize()
        trainer.get_dataloaders()
        _, everything = trainer.get_tr_and_val_datasets()
        subsets.append(trainer.validation_subset(everything).identifiers)
        assert trainer.num_val_iterations_per_epoch == 1
    batch = trainer.configuration_manager.batch_size
    assert subsets[0] == subsets[1] and len(subsets[0]) == batch < len(everything.identifiers)
    assert set(subsets[0]) <= set(everything.identifiers)
    full = make(fold="all", validation_batches=None)
    full.initialize()
    full.get_dataloaders()
    assert full.num_val_iterations_per_epoch == -(-len(everything.identifiers) // batch)
