"""MultiTalent's output layout (Ulrich, Isensee et al., MICCAI 2023) on UniSeg's backbone: no prompt, one sigmoid
output channel per (task, foreground class).

The encoder (with its multi-channel stem) and decoder are UniSeg's; the heads under `decoder.seg_layers` have one
channel per foreground class of every task, task after task in registry order. A task never needs a prompt to be
told apart: its condition only picks which channels are read, and its loss (training/task_heads_trainer.py) only
touches its own channels, so no dataset teaches "background" on a structure that another dataset labels.

Under a condition the network returns the task's channels in nnU-Net's softmax layout, so that every caller
(losses on `[:num_classes]`, nnU-Net's argmax export, the plugin's predictor) reads it like any other task's
logits: channel 0 is a constant 0 (the background "logit"), channel k the sigmoid logit of class k. The argmax is
the most confident class with probability > 0.5, or background when none is. Channels beyond the task's classes
sit below every visible one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.uniseg import _build_stemmed_unet, _StemmedUNetParts


class TaskHeadsUNet(_StemmedUNetParts, ConditionedNetwork):
    """In (B, C, *patch) with C a stem channel count; out (B, num_classes, *patch) for the condition's task (a list
    over deep-supervision levels, highest resolution first, if enabled). `task_num_classes`: every task's class
    count (background included), registry order. The raw sigmoid logits of all tasks: `all_task_logits(x)`."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op, kernel_sizes, strides,
                 n_conv_per_stage, num_classes: int, n_conv_per_stage_decoder, task_num_classes: Sequence[int],
                 stem_channels=None, conv_bias: bool = True, norm_op=None, norm_op_kwargs=None, dropout_op=None,
                 dropout_op_kwargs=None, nonlin=None, nonlin_kwargs=None, deep_supervision: bool = False,
                 decoder_kernel_sizes=None, transpconv_bias: bool = True, **_ignored):
        super().__init__()
        sizes = [int(k) - 1 for k in task_num_classes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every task needs at least one foreground class, got class counts {task_num_classes}")
        self.num_tasks = len(sizes)
        self.num_classes = max(num_classes, max(sizes) + 1)
        self.head_sizes = sizes
        self.head_offsets = [sum(sizes[:t]) for t in range(len(sizes))]
        # heads keep a bias (the reference UniSeg's have none): a sigmoid channel needs its own prior
        _build_stemmed_unet(self, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                            n_conv_per_stage, sum(sizes), n_conv_per_stage_decoder, stem_channels, conv_bias, norm_op,
                            norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision,
                            decoder_kernel_sizes, transpconv_bias, True, extra_bottleneck_channels=0)

    def all_task_logits(self, x: torch.Tensor):
        """Sigmoid logits of every (task, class) channel (a list over deep-supervision levels if enabled)."""
        return self.decoder(self.encoder(x))

    def task_channels(self, logits: torch.Tensor, task: int) -> torch.Tensor:
        """One task's channels of `all_task_logits` in softmax layout: [0, z_1 .. z_k, hidden ...]."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task index {task} out of range 0..{self.num_tasks - 1}")
        start = self.head_offsets[task]
        own = logits[:, start:start + self.head_sizes[task]]
        out = torch.cat((torch.zeros_like(own[:, :1]), own), 1)
        missing = self.num_classes - out.shape[1]
        if missing:
            floor = out.amin(1, keepdim=True) - self.HIDDEN_LOGIT_MARGIN
            out = torch.cat((out, floor.expand(-1, missing, *out.shape[2:])), 1)
        return out

    def forward_tasks(self, x: torch.Tensor, conditions: Sequence[ConditionLike]) -> List:
        """One encoder-decoder pass; each condition reads its task's channels."""
        tasks = [self.resolve_condition(c).task for c in conditions]
        if any(t is None for t in tasks):
            raise ValueError("TaskHeadsUNet needs condition.task")
        logits = self.all_task_logits(x)
        if isinstance(logits, (list, tuple)):
            return [[self.task_channels(level, t) for level in logits] for t in tasks]
        return [self.task_channels(logits, t) for t in tasks]

    def forward_sample_tasks(self, x: torch.Tensor, sample_tasks: Sequence[int]):
        """A batch that mixes tasks (MultiTalent's batches): sample b reads the channels of task sample_tasks[b]."""
        if len(sample_tasks) != x.shape[0]:
            raise ValueError(f"{len(sample_tasks)} sample tasks for a batch of {x.shape[0]}")

        def per_sample(level):
            return torch.cat([self.task_channels(level[b:b + 1], t) for b, t in enumerate(sample_tasks)])
        logits = self.all_task_logits(x)
        return [per_sample(level) for level in logits] if isinstance(logits, (list, tuple)) else per_sample(logits)

    def forward(self, x: torch.Tensor, condition: ConditionLike = None):
        resolved = self.resolve_condition(condition)
        if resolved.sample_tasks is not None:
            return self.hide_invisible_classes(self.forward_sample_tasks(x, resolved.sample_tasks))
        return self.hide_invisible_classes(self.forward_tasks(x, [resolved])[0])


def sigmoid_channels(task_logits: torch.Tensor) -> torch.Tensor:
    """The sigmoid logits (channels 1..) of a task's softmax-layout output (see TaskHeadsUNet.task_channels)."""
    return task_logits[:, 1:]


def one_hot_regions(target: torch.Tensor, num_foreground: int) -> torch.Tensor:
    """(B, 1, *spatial) label map -> (B, num_foreground, *spatial) {0, 1} maps of labels 1..num_foreground."""
    values = torch.arange(1, num_foreground + 1, device=target.device).view(1, -1, *[1] * (target.ndim - 2))
    return (target == values).to(torch.float32)


class SigmoidTaskLoss(nn.Module):
    """A region loss (nnU-Net's Dice + BCE, sigmoid) on a task's softmax-layout output cut to its classes and its
    label-map target: only the task's own channels are supervised."""

    def __init__(self, region_loss: nn.Module):
        super().__init__()
        self.region_loss = region_loss

    def forward(self, output: torch.Tensor, target: torch.Tensor, loss_mask: Optional[torch.Tensor] = None):
        logits = sigmoid_channels(output)
        return self.region_loss(logits, one_hot_regions(target, logits.shape[1]))
