"""Checkpoints that survive a kill and load without executing pickled code (every plugin trainer mixes this in).

nnU-Net writes checkpoint_latest/best/final with torch.save straight onto the old file: a job killed while saving
(SIGKILL, OOM killer, preempted cluster node) leaves a truncated file that `nnUNetv2_train --c` then cannot read.
Here the checkpoint is written next to the target and moved over it in one atomic rename, so the previous
checkpoint stays readable until the new one is complete. `--c` first checks the file with `weights_only=True`.
"""
from __future__ import annotations

import os
from typing import Union

from nnunetv2_universal.finetuning.weights import load_checkpoint_safely

PARTIAL_SUFFIX = ".partial"


class SafeCheckpoints:
    """Mixin for nnUNetTrainer subclasses: atomic save_checkpoint; load_checkpoint refuses pickled code."""

    def save_checkpoint(self, filename: str) -> None:
        partial = filename + PARTIAL_SUFFIX
        try:
            super().save_checkpoint(partial)
        except BaseException:
            if os.path.isfile(partial):
                os.remove(partial)
            raise
        if os.path.isfile(partial):  # not written on ranks > 0 or with checkpointing disabled
            os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        # nnU-Net 2.x's load_checkpoint only works when given a path (a dict leaves its local unbound), so the file
        # is first read with weights_only=True, which raises before any pickled code runs; nnU-Net then reads it.
        if isinstance(filename_or_checkpoint, str):
            load_checkpoint_safely(filename_or_checkpoint)
        super().load_checkpoint(filename_or_checkpoint)
