"""Exponential moving average (EMA) of the weights, evaluated instead of the raw weights (Hermes' reference).

The reference updates after every optimiser step with decay min(1 - 1/(n + 1), cap) (n = updates so far, so the
first update copies and early updates average evenly) and cap 0.99; buffers (normalisation statistics, if any) are
copied from the network after each update, not averaged, as the reference does.
Validation during training, `checkpoint_best`/`checkpoint_latest` (under `network_weights`) and `checkpoint_final`
hold the EMA weights; `checkpoint_latest` also keeps the raw weights for `--c`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.optim.swa_utils import AveragedModel

from nnunetv2_universal.finetuning.weights import load_checkpoint_safely


def capped_ema(cap: float):
    """AveragedModel's multi_avg_fn for decay min(1 - 1/(n + 1), cap)."""
    def update(averaged, current, num_averaged):
        n = int(num_averaged)
        decay = min(1.0 - 1.0 / (n + 1.0), cap)
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
    return update


@torch.no_grad()
def update_ema(ema: AveragedModel, network: torch.nn.Module) -> None:
    """Average the parameters, copy the buffers."""
    ema.update_parameters(network)
    for averaged, current in zip(ema.module.buffers(), network.buffers()):
        averaged.copy_(current)


class EMAWeights:
    """nnUNetTrainer mixin (before SafeCheckpoints in the bases): keeps `self.ema`, an AveragedModel of the network.
    The trainer's step calls `on_optimizer_step()` (training.steps.backward_and_step does)."""

    ema_decay: Optional[float] = 0.99  # None: no EMA, the raw weights are evaluated and saved

    ema: Optional[AveragedModel] = None

    def _ensure_ema(self) -> Optional[AveragedModel]:
        if self.ema is None and self.ema_decay is not None:
            self.ema = AveragedModel(self._plain_network(), multi_avg_fn=capped_ema(self.ema_decay),
                                     use_buffers=False)
        return self.ema

    def on_train_start(self):
        super().on_train_start()
        self._ensure_ema()

    def on_optimizer_step(self) -> None:
        if self._ensure_ema() is not None:
            update_ema(self.ema, self._plain_network())

    def _ema_state(self) -> dict:
        return self.ema.module.state_dict()

    def _swap_in_ema(self) -> Optional[dict]:
        """Load the EMA weights into the network; returns the raw weights (None without EMA updates)."""
        if self.ema is None or int(self.ema.n_averaged) == 0:
            return None
        network = self._plain_network()
        raw = {k: v.detach().clone() for k, v in network.state_dict().items()}
        network.load_state_dict(self._ema_state())
        return raw

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._raw_weights = self._swap_in_ema()

    def on_validation_epoch_end(self, val_outputs):
        try:
            super().on_validation_epoch_end(val_outputs)
        finally:
            if getattr(self, "_raw_weights", None) is not None:
                self._plain_network().load_state_dict(self._raw_weights)
                self._raw_weights = None

    def checkpoint_weights(self) -> Tuple[dict, dict]:
        weights, extras = super().checkpoint_weights()
        if self.ema is None or int(self.ema.n_averaged) == 0:
            return weights, extras
        return self._ema_state(), {**extras, "training_weights": weights, "ema_updates": int(self.ema.n_averaged)}

    def on_train_end(self):
        # the final checkpoint and the final validation use the EMA weights
        self._swap_in_ema()
        self.ema = None
        super().on_train_end()

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = load_checkpoint_safely(filename_or_checkpoint) if isinstance(filename_or_checkpoint, str) \
            else filename_or_checkpoint
        if "training_weights" not in checkpoint:
            return  # a final checkpoint (EMA weights only) or one without EMA
        ema = self._ensure_ema()
        network = self._plain_network()
        if ema is not None:
            ema.module.load_state_dict(checkpoint["network_weights"])
            ema.n_averaged.fill_(int(checkpoint.get("ema_updates", 1)))
        network.load_state_dict(checkpoint["training_weights"])
