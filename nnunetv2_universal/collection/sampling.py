"""Task-balanced batches: every batch holds one task, and every round holds the same number of batches per task
(UniSeg); or, with task weights, each batch's task drawn with probability proportional to its weight (Hermes:
the sum of its cases' sampling weights, i.e. the reference's weighted case sampler at the batch level). With task
groups (MultiTalent), a batch mixes the tasks of one group: tasks whose images share channels and augmentation.

The UniSeg reference shares a per-task budget between worker processes through a multiprocessing manager. Here
each data-loading worker (and each DDP rank) keeps its own schedule, seeded by (rank, worker): each worker's
stream is exactly balanced per round, so the union is balanced too, without shared state.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader


class TaskSchedule:
    """Endless sequence of task ids in rounds; a round has `batches_per_task` of every task, shuffled. With
    `probabilities` (one per task) every batch's task is drawn independently with those probabilities instead."""

    def __init__(self, tasks: Sequence[int], batches_per_task: int, seed: int,
                 probabilities: Optional[Sequence[float]] = None):
        if not tasks:
            raise ValueError("a task schedule needs at least one task with cases")
        if batches_per_task < 1:
            raise ValueError(f"batches_per_task must be >= 1, got {batches_per_task}")
        self.tasks = list(tasks)
        self.batches_per_task = batches_per_task
        self.rng = np.random.default_rng(seed)
        self._round: List[int] = []
        self.probabilities = None
        if probabilities is not None:
            p = np.asarray(probabilities, dtype=float)
            if p.shape != (len(self.tasks),) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(f"need one non-negative probability per task ({len(self.tasks)}), got {probabilities}")
            self.probabilities = p / p.sum()

    def __next__(self) -> int:
        if self.probabilities is not None:
            return int(self.rng.choice(self.tasks, p=self.probabilities))
        if not self._round:
            self._round = list(self.rng.permutation(np.repeat(self.tasks, self.batches_per_task)))
        return int(self._round.pop())

    def __iter__(self):
        return self


class TaskBalancedDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader whose batches are drawn one task at a time (cases uniformly, with replacement).

    `case_tasks` maps each case id of the dataset to its task index (from the registry). The chosen task of the
    last batch is exposed as `last_task`. `transforms` may be one pipeline or a {task: pipeline} mapping (tasks
    differ in which channels are masked).

    `task_groups` (lists of task indices whose cases may share a batch: same channels, same pipeline): the
    schedule picks the first sample's task, every other sample's task comes from a balanced stream of that task's
    group, so a batch may mix tasks and each task still gets its share of samples.
    """

    def __init__(self, *args, case_tasks: Mapping[str, int], batches_per_task: int = 50, rank: int = 0,
                 seed: int = 12345, task_weights: Optional[Mapping[int, float]] = None,
                 task_groups: Optional[Sequence[Sequence[int]]] = None, **kwargs):
        transforms = kwargs.pop("transforms", None)
        self.task_transforms = transforms if isinstance(transforms, Mapping) else None
        super().__init__(*args, transforms=None if self.task_transforms is not None else transforms, **kwargs)
        missing = [k for k in self.indices if k not in case_tasks]
        if missing:
            raise KeyError(f"cases without a task in the registry: {missing[:5]}")
        self.cases_of_task: Dict[int, List[str]] = {}
        for k in self.indices:
            self.cases_of_task.setdefault(case_tasks[k], []).append(k)
        self.batches_per_task = batches_per_task
        self.rank = rank
        self.seed = seed
        self.task_weights = None if task_weights is None else dict(task_weights)
        self._schedule: Optional[TaskSchedule] = None
        self.last_task: Optional[int] = None
        self.group_of_task: Dict[int, tuple] = {}
        for group in task_groups or ():
            members = tuple(sorted(t for t in group if t in self.cases_of_task))
            self.group_of_task.update({t: members for t in members})
        self._group_streams: Dict[tuple, TaskSchedule] = {}

    @property
    def schedule(self) -> TaskSchedule:
        # Created lazily so that each worker process (thread_id set by the augmenter) gets its own stream.
        if self._schedule is None:
            tasks = sorted(self.cases_of_task)
            probabilities = None if self.task_weights is None else [self.task_weights[t] for t in tasks]
            self._schedule = TaskSchedule(tasks, self.batches_per_task,
                                          seed=self.seed + 1000 * self.rank + self.thread_id,
                                          probabilities=probabilities)
        return self._schedule

    def get_indices(self):
        self.last_task = next(self.schedule)
        if self.task_transforms is not None:
            self.transforms = self.task_transforms[self.last_task]
        group = self.group_of_task.get(self.last_task, ())
        if len(group) < 2:
            cases = self.cases_of_task[self.last_task]
            return [cases[i] for i in np.random.randint(0, len(cases), self.batch_size)]
        tasks = [self.last_task] + [next(self._group_stream(group)) for _ in range(self.batch_size - 1)]
        return [self.cases_of_task[t][np.random.randint(len(self.cases_of_task[t]))] for t in tasks]

    def _group_stream(self, group: tuple) -> TaskSchedule:
        """Balanced stream of a group's tasks for the other samples of a batch (per worker, like the schedule)."""
        if group not in self._group_streams:
            self._group_streams[group] = TaskSchedule(group, 1, seed=self.seed + 1000 * self.rank + self.thread_id
                                                      + 7 * group[0] + 1)
        return self._group_streams[group]
