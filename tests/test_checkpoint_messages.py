"""What the checkpoint readers say about a file they cannot use: not a checkpoint, damaged or truncated, pickled
code (the only case where --allow_pickle is the advice), already an nnU-Net v2 model, no network weights."""
from __future__ import annotations

import os
import subprocess

import pytest
import torch

from conftest import BIN, clean_env
from nnunetv2_universal.finetuning.uniseg_v1_import import import_uniseg_v1
from nnunetv2_universal.finetuning.weights import export_backbone, load_checkpoint_safely


class _Payload:
    """Not an allowed global: unpickling it needs pickled code."""


def _truncated(path, new_format=True):
    torch.save({"network_weights": {"w": torch.randn(64, 64)}}, path, _use_new_zipfile_serialization=new_format)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return path


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_file_that_is_no_checkpoint_is_said_to_be_none(tmp_path, allow_pickle):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not weights\n" * 10)
    with pytest.raises(RuntimeError, match=r"notes.pth is not a PyTorch checkpoint") as error:
        load_checkpoint_safely(str(path), allow_pickle)
    assert "--allow_pickle" not in str(error.value)


@pytest.mark.parametrize("new_format", [True, False])
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_truncated_checkpoint_is_said_to_be_damaged_without_pickle_advice(tmp_path, new_format, allow_pickle):
    path = _truncated(str(tmp_path / "half.pth"), new_format)
    with pytest.raises(RuntimeError, match=r"half.pth is a damaged or truncated PyTorch checkpoint") as error:
        load_checkpoint_safely(path, allow_pickle)
    assert "--allow_pickle" not in str(error.value)


def test_only_pickled_code_gets_the_allow_pickle_advice_and_the_advice_works(tmp_path):
    path = str(tmp_path / "old.model")
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _Payload()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match=r"holds pickled Python objects .*pass --allow_pickle"):
        load_checkpoint_safely(path)
    assert torch.equal(load_checkpoint_safely(path, allow_pickle=True)["state_dict"]["w"], torch.ones(1))


def test_a_v2_checkpoint_given_to_the_v1_importer_says_how_to_predict_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    fold = tmp_path / "results" / "Dataset900_X" / "UniSegTrainer__UniSegPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    torch.save({"network_weights": {"w": torch.ones(1)}, "trainer_name": "UniSegTrainer"},
               fold / "checkpoint_final.pth")
    with pytest.raises(ValueError, match=r"is already an nnU-Net v2 checkpoint \(UniSegTrainer\), not a UniSeg v1 "
                                         r".*nnUNetv2_universal_predict -d Dataset900_X -tr UniSegTrainer -p "
                                         r"UniSegPlans -c 3d_fullres -f 0 -chk checkpoint_final.pth"):
        import_uniseg_v1(str(fold / "checkpoint_final.pth"), 620)


def test_export_backbone_names_what_the_file_holds_instead_of_network_weights(tmp_path):
    path = str(tmp_path / "random.pth")
    torch.save({"w": torch.ones(1), "epoch": 3}, path)
    with pytest.raises(ValueError, match=r"random.pth is not an nnU-Net v2 checkpoint \(no 'network_weights'; found "
                                         r"\['epoch', 'w'\]\)"):
        export_backbone(path, str(tmp_path / "out.pth"))
    assert not os.path.exists(tmp_path / "out.pth")


@pytest.mark.integration
def test_the_importer_on_a_corrupt_file_is_one_line_and_exit_status_2(tmp_path):
    env = clean_env(str(tmp_path))
    path = _truncated(str(tmp_path / "model_final_checkpoint.model"), new_format=False)
    proc = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_import_uniseg_v1"), "-i", path, "-d", "620",
                           "--allow_pickle"], env=env, capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "damaged or truncated" in lines[0] and "Traceback" not in proc.stderr
    assert os.listdir(env["nnUNet_results"]) == []
