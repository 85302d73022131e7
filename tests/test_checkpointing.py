"""SafeCheckpoints on its own: a save that dies half-way leaves the previous checkpoint intact, and a checkpoint
that needs pickled code is refused before nnU-Net's loader sees it. (The end-to-end tests SIGKILL real trainers.)"""
from __future__ import annotations

import os

import pytest
import torch

from nnunetv2_universal.training.checkpointing import PARTIAL_SUFFIX, SafeCheckpoints


class _Stock:
    """Stands in for nnUNetTrainer: the state SafeCheckpoints saves, and a loader that records its calls."""

    local_rank, disable_checkpointing, is_ddp, grad_scaler, _best_ema, current_epoch = 0, False, False, None, None, 2
    my_init_kwargs, inference_allowed_mirroring_axes = {}, None

    def __init__(self):
        self.loaded = []
        self.network = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.1)
        self.logger = type("Logger", (), {"get_checkpoint": lambda _: {}})()

    def load_checkpoint(self, filename_or_checkpoint):
        self.loaded.append(filename_or_checkpoint)


class _Trainer(SafeCheckpoints, _Stock):
    pass


class _Payload:
    """Not an allowed global: unpickling it needs pickled code."""


def test_save_dying_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = str(tmp_path / "checkpoint_latest.pth")
    torch.save({"current_epoch": 3}, target)
    real_save = torch.save

    def dying_save(obj, filename):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # what reaches Python of a kill; SIGKILL itself leaves only the .partial

    trainer = _Trainer()
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True) == {"current_epoch": 3}
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]
    trainer.save_checkpoint(target)
    saved = torch.load(target, weights_only=True)
    assert saved["current_epoch"] == 3 and set(saved["network_weights"]) == {"weight", "bias"}
    assert saved.keys() >= {"optimizer_state", "grad_scaler_state", "logging", "_best_ema", "init_args",
                            "trainer_name", "inference_allowed_mirroring_axes"}
    assert not os.path.exists(target + PARTIAL_SUFFIX)


def test_load_refuses_pickled_code_before_nnunet_reads_the_file(tmp_path):
    good, bad = str(tmp_path / "good.pth"), str(tmp_path / "bad.pth")
    torch.save({"network_weights": {"w": torch.ones(2)}, "current_epoch": 1}, good)
    torch.save({"network_weights": {}, "payload": _Payload()}, bad)
    trainer = _Trainer()
    with pytest.raises(RuntimeError, match="holds pickled Python objects"):
        trainer.load_checkpoint(bad)
    assert trainer.loaded == []
    trainer.load_checkpoint(good)
    assert trainer.loaded == [good]
