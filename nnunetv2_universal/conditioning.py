"""The one conditioning interface shared by every universal network, trainer and predictor.

A `Condition` says which task (and, for methods that need them, which modality, view or source dataset) a
forward pass is for. Trainers build it from the task registry, predictors from the user's choice; networks
receive it as an explicit `forward(x, condition)` argument or, when nnU-Net calls `network(x)` with the image
only, from the network's `condition` attribute.
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

from torch import nn


@dataclass(frozen=True)
class Condition:
    """Ids (indices into the task registry) that select what a network computes for one batch.

    task: task index; modality: one modality index per input channel; view: acquisition view index (echo);
    dataset: source dataset index (per-dataset heads); tasks: several global task ids requested at once (Hermes);
    labels: a subset of `task`'s local label values to predict (the others are never output); sample_tasks: one task
    index per sample of a batch that mixes tasks (networks that read every task's channels in one pass). Unused
    fields stay None.
    """
    task: Optional[int] = None
    modality: Optional[Tuple[int, ...]] = None
    view: Optional[int] = None
    dataset: Optional[int] = None
    tasks: Optional[Tuple[int, ...]] = None
    labels: Optional[Tuple[int, ...]] = None
    sample_tasks: Optional[Tuple[int, ...]] = None


ConditionLike = Union[Condition, int, None]


def as_condition(value: ConditionLike) -> Optional[Condition]:
    """Accept a Condition, a bare task index or None."""
    if value is None or isinstance(value, Condition):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return Condition(task=int(value))
    raise TypeError(f"expected a Condition, a task index or None, got {type(value).__name__}")


class ConditionedNetwork(nn.Module):
    """Base class for networks whose output depends on a Condition.

    `forward(x, condition=None)` falls back to `self.condition`, which nnU-Net's predictor path sets because it
    calls `network(x)` with the image only.
    """

    # Hidden channels sit this far below the lowest visible logit of each voxel: never the argmax, softmax ~0,
    # and small enough in magnitude for nnU-Net's float16 sliding-window accumulation.
    HIDDEN_LOGIT_MARGIN = 30.0

    def __init__(self):
        super().__init__()
        self.condition: Optional[Condition] = None
        # Set for stock nnU-Net prediction: channels from this index on are hidden so argmax ignores them.
        self.visible_classes: Optional[int] = None

    def hide_invisible_classes(self, logits):
        """Push channels >= visible_classes below every visible one (a list of deep-supervision outputs too)."""
        if self.visible_classes is None:
            return logits
        if isinstance(logits, (list, tuple)):
            return [self.hide_invisible_classes(o) for o in logits]
        floor = logits[:, :self.visible_classes].amin(1, keepdim=True) - self.HIDDEN_LOGIT_MARGIN
        hidden = logits.clone()
        hidden[:, self.visible_classes:] = floor
        return hidden

    def resolve_condition(self, condition: ConditionLike) -> Condition:
        resolved = as_condition(condition)
        if resolved is None:
            resolved = self.condition
        if resolved is None:
            raise ValueError(f"{type(self).__name__} needs a condition: call network(x, condition) or set "
                             f"network.condition (the plugin's predictor does this for --task)")
        return resolved

    @contextmanager
    def conditioned(self, condition: ConditionLike) -> Iterator["ConditionedNetwork"]:
        """Temporarily set the default condition (restored afterwards)."""
        previous = self.condition
        self.condition = as_condition(condition)
        try:
            yield self
        finally:
            self.condition = previous
