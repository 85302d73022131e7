"""Checkpoints that survive a kill and load without executing pickled code (every plugin trainer mixes this in).

nnU-Net writes checkpoint_latest/best/final with torch.save straight onto the old file: a job killed while saving
(SIGKILL, OOM killer, preempted cluster node) leaves a truncated file that `nnUNetv2_train --c` then cannot read.
Here the checkpoint is written next to the target and moved over it in one atomic rename, so the previous
checkpoint stays readable until the new one is complete. `--c` first checks the file with `weights_only=True`.
"""
from __future__ import annotations

import os
from typing import Tuple, Union

import torch
from torch._dynamo import OptimizedModule

from nnunetv2_universal.finetuning.weights import load_checkpoint_safely

PARTIAL_SUFFIX = ".partial"


class SafeCheckpoints:
    """Mixin for nnUNetTrainer subclasses: atomic save_checkpoint; load_checkpoint refuses pickled code."""

    def _plain_network(self) -> torch.nn.Module:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def checkpoint_weights(self) -> Tuple[dict, dict]:
        """(network_weights, extra entries) to save; mixins such as EMAWeights change what is saved."""
        return self._plain_network().state_dict(), {}

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net 2.x's checkpoint fields, written here so that mixins can add entries
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        weights, extras = self.checkpoint_weights()
        checkpoint = {
            "network_weights": weights,
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            **extras,
        }
        partial = filename + PARTIAL_SUFFIX
        try:
            torch.save(checkpoint, partial)
        except BaseException:
            if os.path.isfile(partial):
                os.remove(partial)
            raise
        os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        # nnU-Net 2.x's load_checkpoint only works when given a path (a dict leaves its local unbound), so the file
        # is first read with weights_only=True, which raises before any pickled code runs; nnU-Net then reads it.
        if isinstance(filename_or_checkpoint, str):
            load_checkpoint_safely(filename_or_checkpoint)
        super().load_checkpoint(filename_or_checkpoint)
