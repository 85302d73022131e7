"""Parameters a training step did not use stay exactly as they are.

A batch here holds one task (one dataset, one view, one channel count), so the heads, task rows, prompt slots,
experts and stems of the others take no part in its loss. nnU-Net's DDP needs every parameter in every step, so
the networks give those an exact zero gradient rather than none; momentum, weight decay and Adam-style moments would
still move them by what earlier batches left behind (M4oE's unrouted experts under AdamW's weight decay, a task's
head under SGD's momentum 0.99 while other tasks train).

Rule: an element is idle in a step when its gradient is exactly zero when the optimiser steps, that is after DDP
has averaged the gradients, so every rank decides the same. A wholly idle tensor loses its gradient (optimisers
skip it, state included); the idle elements of a partly used tensor (a task's rows in a shared head or table) get
their value and their optimiser state (momentum, moments: every state tensor of the parameter's shape) put back
after the step. Elements that no loss ever reaches (nnU-Net's lowest deep-supervision head, weight 0) stay at their
initial values instead of decaying; they do not affect the output.
"""
from __future__ import annotations

from typing import List, Tuple

import torch


class IdleParametersStayStill:
    """Step hooks on `optimizer` implementing the rule above; `remove()` takes them off again."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self._put_back: List[Tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor, dict]] = []
        self._handles = (optimizer.register_step_pre_hook(self._before_step),
                         optimizer.register_step_post_hook(self._after_step))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    @torch.no_grad()
    def _before_step(self, optimizer, _args, _kwargs) -> None:
        self._put_back = []
        params = [p for group in optimizer.param_groups for p in group["params"]
                  if p.grad is not None and not p.grad.is_sparse]
        if not params:
            return
        zero_counts = torch.stack([(p.grad == 0).sum().to(params[0].device) for p in params]).tolist()  # one sync
        for p, zeros in zip(params, zero_counts):
            if zeros == p.numel():
                p.grad = None
            elif zeros:
                idle = p.grad == 0
                state = {key: value[idle].clone() for key, value in optimizer.state.get(p, {}).items()
                         if torch.is_tensor(value) and value.shape == p.shape}
                self._put_back.append((p, idle, p[idle].clone(), state))

    @torch.no_grad()
    def _after_step(self, optimizer, _args, _kwargs) -> None:
        for p, idle, values, state in self._put_back:
            p[idle] = values
            for key, value in state.items():
                optimizer.state[p][key][idle] = value
        self._put_back = []
