"""SafeCheckpoints on its own: a save that dies half-way leaves the previous checkpoint intact, and a checkpoint
that needs pickled code is refused before nnU-Net's loader sees it. (The end-to-end tests SIGKILL real trainers.)"""
from __future__ import annotations

import os

import pytest
import torch

from nnunetv2_universal.training.checkpointing import PARTIAL_SUFFIX, SafeCheckpoints


class _Stock:
    """Stands in for nnUNetTrainer: writes straight onto the file it is given, may be killed while writing."""

    die_while_saving = False

    def __init__(self):
        self.loaded = []

    def save_checkpoint(self, filename):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
            if self.die_while_saving:
                raise KeyboardInterrupt  # what reaches Python of a kill; SIGKILL itself leaves only the .partial

    def load_checkpoint(self, filename_or_checkpoint):
        self.loaded.append(filename_or_checkpoint)


class _Trainer(SafeCheckpoints, _Stock):
    pass


class _Payload:
    """Not an allowed global: unpickling it needs pickled code."""


def test_save_dying_half_way_keeps_the_previous_checkpoint(tmp_path):
    target = str(tmp_path / "checkpoint_latest.pth")
    torch.save({"current_epoch": 3}, target)
    trainer = _Trainer()
    trainer.die_while_saving = True
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(target)
    assert torch.load(target, weights_only=True) == {"current_epoch": 3}
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]
    trainer.die_while_saving = False
    trainer.save_checkpoint(target)
    assert open(target, "rb").read() == b"half a checkpoint" and not os.path.exists(target + PARTIAL_SUFFIX)


def test_load_refuses_pickled_code_before_nnunet_reads_the_file(tmp_path):
    good, bad = str(tmp_path / "good.pth"), str(tmp_path / "bad.pth")
    torch.save({"network_weights": {"w": torch.ones(2)}, "current_epoch": 1}, good)
    torch.save({"network_weights": {}, "payload": _Payload()}, bad)
    trainer = _Trainer()
    with pytest.raises(RuntimeError, match="cannot be loaded without executing pickled code"):
        trainer.load_checkpoint(bad)
    assert trainer.loaded == []
    trainer.load_checkpoint(good)
    assert trainer.loaded == [good]
