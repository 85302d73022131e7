"""How strongly does a universal network's output depend on its condition? Logged every epoch by every trainer.

On the validation batches, the foreground predicted under the batch's own task is compared with the foreground
predicted for the same images under every other compatible task (same input channels): condition sensitivity =
1 - Dice between the two foreground masks, pooled over the epoch's batches and averaged over task pairs.

- 0: the output does not depend on the task: the network ignores its condition. Where tasks share anatomy and
  label different structures, each task then segments the others' structures too.
- 1: the tasks' foregrounds do not overlap at all: each task segments something else.
Tasks that label overlapping structures (an organ and its tumour) settle in between; what matters is that the
value leaves 0. A warning is printed once when it is still below `condition_warning_threshold` after
`condition_warning_epoch` epochs. None of the reference implementations has this.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch

CONDITION_KEY = "condition_sensitivity"
CONDITION_PER_TASK_KEY = "condition_sensitivity_per_task"


def foreground_overlap(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """[|a & b|, |a|, |b|] of two boolean masks."""
    return np.array([float((a & b).sum()), float(a.sum()), float(b.sum())])


class ConditionSensitivityLogging:
    """Trainer mixin: collect foreground overlaps between tasks in validation, log and check them per epoch.

    The trainer calls `record_condition_overlap(task, other_task, own_fg, other_fg)` from its validation step
    and `log_condition_sensitivity()` at the end of each validation epoch. The trainer's local logger must know
    CONDITION_KEY and CONDITION_PER_TASK_KEY (TaskAwareLocalLogger does).
    """

    condition_warning_epoch: Optional[int] = None  # None: a tenth of the epochs, at least 5
    condition_warning_threshold = 0.05

    def record_condition_overlap(self, task: int, other_task: int, own_fg: torch.Tensor,
                                 other_fg: torch.Tensor) -> None:
        stats = self.__dict__.setdefault("_condition_overlaps", {})
        key = (int(task), int(other_task))
        stats[key] = stats.get(key, 0) + foreground_overlap(own_fg, other_fg)

    def _gather_condition_overlaps(self) -> Dict[Tuple[int, int], np.ndarray]:
        stats = self.__dict__.pop("_condition_overlaps", {})
        if getattr(self, "is_ddp", False):
            from torch import distributed as dist
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, stats)
            stats = {}
            for rank_stats in gathered:
                for k, v in rank_stats.items():
                    stats[k] = stats.get(k, 0) + v
        return stats

    def log_condition_sensitivity(self, task_names: Iterable[str]) -> float:
        names = list(task_names)
        per_pair = {}
        for (t, o), (inter, a, b) in self._gather_condition_overlaps().items():
            if a + b > 0:
                per_pair[(t, o)] = 1.0 - 2.0 * inter / (a + b)
        per_task = {names[t]: float(np.mean([v for (tt, _), v in per_pair.items() if tt == t]))
                    for t in sorted({t for t, _ in per_pair})}
        value = float(np.mean(list(per_pair.values()))) if per_pair else float("nan")
        self.logger.log(CONDITION_KEY, value, self.current_epoch)
        self.logger.log(CONDITION_PER_TASK_KEY, per_task, self.current_epoch)
        if per_pair:
            self.print_to_log_file(f"Condition sensitivity: {value:.4f} (1 - Dice of the foreground under the own "
                                   f"vs another task) {({k: round(v, 4) for k, v in per_task.items()})}")
        self._maybe_warn_condition_ignored()
        return value

    def _maybe_warn_condition_ignored(self) -> None:
        if self.__dict__.get("_condition_warned"):
            return
        epoch = self.condition_warning_epoch
        if epoch is None:
            epoch = max(5, self.num_epochs // 10)
        if self.current_epoch + 1 < epoch:
            return
        values = [v for v in self.logger.get_value(CONDITION_KEY, step=None)[-3:] if not np.isnan(v)]
        if values and max(values) < self.condition_warning_threshold:
            self._condition_warned = True
            self.print_to_log_file(
                f"WARNING: the network ignores its task prompt: after {self.current_epoch + 1} epochs the "
                f"condition sensitivity is {values[-1]:.3f} (< {self.condition_warning_threshold}), i.e. every task "
                f"predicts (nearly) the same foreground on the same image. On tasks that share anatomy each task "
                f"will label the other tasks' structures. See docs/explanation/conditioning-diagnostic.md.",
                also_print_to_console=True)
