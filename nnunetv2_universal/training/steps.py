"""The optimisation step every trainer here shares with nnU-Net: (scaled) backward, gradient-norm clip 12, step,
then the trainer's `on_optimizer_step` hook if it has one."""
from __future__ import annotations

import torch


def backward_and_step(trainer, loss: torch.Tensor) -> None:
    """nnU-Net's train_step tail: GradScaler on CUDA, plain backward elsewhere."""
    if trainer.grad_scaler is not None:
        trainer.grad_scaler.scale(loss).backward()
        trainer.grad_scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
        trainer.grad_scaler.step(trainer.optimizer)
        trainer.grad_scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
        trainer.optimizer.step()
    if hasattr(trainer, "on_optimizer_step"):  # e.g. the EMA of the weights
        trainer.on_optimizer_step()
