"""Merging task-local label maps into one global label map (`--all-tasks`).

Global labels: every foreground class of every registry task gets its own value, in registry order (task 0's
classes first), so a value means the same structure whatever subset of tasks ran. Priority rule: tasks are
pasted in priority order (default: registry order); a task's foreground overwrites what earlier tasks wrote,
background never overwrites anything. With a priority list, tasks not in the list are pasted first (underneath,
in registry order) and the listed ones after, in the given order: the last listed task is on top.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np

from nnunetv2_universal.registry import TaskRegistry


class GlobalLabels:
    """Task-local label k of task t <-> one global label value."""

    def __init__(self, registry: TaskRegistry):
        self.registry = registry
        self.offsets: List[int] = []
        offset = 0
        for task in registry:
            self.offsets.append(offset)
            offset += task.num_classes - 1
        self.num_labels = offset + 1

    def global_value(self, task: int, local_label: int) -> int:
        return 0 if local_label == 0 else self.offsets[task] + local_label

    def lookup_table(self, task: int) -> np.ndarray:
        n = self.registry.tasks[task].num_classes
        return np.array([self.global_value(task, k) for k in range(n)], dtype=np.uint16)

    def to_dict(self) -> dict:
        labels = {"background": 0}
        for t, task in enumerate(self.registry):
            for name, value in task.foreground_labels.items():
                labels[f"{task.name}:{name}"] = self.global_value(t, value)
        return labels


def merge_task_segmentations(segmentations: Mapping[int, np.ndarray], labels: GlobalLabels,
                             priority: Optional[Sequence[int]] = None) -> np.ndarray:
    """Merge {task index: task-local label map} (all of one shape) following the module's priority rule."""
    if not segmentations:
        raise ValueError("nothing to merge")
    listed = [t for t in (priority or range(len(labels.registry))) if t in segmentations]
    order = [t for t in sorted(segmentations) if t not in listed] + listed  # unlisted tasks go underneath
    shape = next(iter(segmentations.values())).shape
    dtype = np.uint8 if labels.num_labels < 256 else np.uint16
    merged = np.zeros(shape, dtype=dtype)
    for t in order:
        seg = np.asarray(segmentations[t])
        if seg.shape != shape:
            raise ValueError(f"task {labels.registry.names[t]}: shape {seg.shape} differs from {shape}")
        foreground = seg > 0
        merged[foreground] = labels.lookup_table(t)[seg[foreground]]
    return merged
