"""Unit tests of task-balanced sampling: TaskSchedule rounds and TaskBalancedDataLoader.get_indices (on a fake
dataset object, no data on disk)."""
from __future__ import annotations

from collections import Counter
from itertools import islice

import numpy as np
import pytest
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_universal.collection.sampling import TaskBalancedDataLoader, TaskSchedule


# ---------------------------------------------------------------- TaskSchedule

def test_schedule_rounds_are_exactly_balanced():
    schedule = TaskSchedule(tasks=[0, 1, 2], batches_per_task=50, seed=0)
    draws = list(islice(schedule, 3 * 150))
    assert all(isinstance(d, int) for d in draws)
    for r in range(3):
        block = draws[r * 150:(r + 1) * 150]
        assert Counter(block) == {0: 50, 1: 50, 2: 50}
    # shuffled within a round, not 50 x task 0 then 50 x task 1 ...
    assert draws[:150] != sorted(draws[:150]) and draws[:150] != sorted(draws[:150], reverse=True)
    # rounds are reshuffled
    assert draws[:150] != draws[150:300]


def test_schedule_with_non_contiguous_task_ids():
    schedule = TaskSchedule(tasks=[2, 5], batches_per_task=3, seed=7)
    draws = [next(schedule) for _ in range(12)]
    for r in range(2):
        assert Counter(draws[r * 6:(r + 1) * 6]) == {2: 3, 5: 3}


def test_schedule_seed_determines_order():
    a = list(islice(TaskSchedule([0, 1, 2], 50, seed=0), 150))
    a_again = list(islice(TaskSchedule([0, 1, 2], 50, seed=0), 150))
    b = list(islice(TaskSchedule([0, 1, 2], 50, seed=1), 150))
    assert a == a_again
    assert a != b
    assert Counter(a) == Counter(b)


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one task"):
        TaskSchedule(tasks=[], batches_per_task=50, seed=0)
    with pytest.raises(ValueError, match="batches_per_task must be >= 1"):
        TaskSchedule(tasks=[0, 1], batches_per_task=0, seed=0)
    with pytest.raises(ValueError, match="batches_per_task"):
        TaskSchedule(tasks=[0, 1], batches_per_task=-3, seed=0)


# ---------------------------------------------------------------- TaskBalancedDataLoader

class FakeDataset:
    """What nnUNetDataLoader.__init__ needs of a dataset: its identifiers."""

    def __init__(self, identifiers):
        self.identifiers = list(identifiers)


CASES_PER_TASK = {0: 10, 1: 3, 2: 1}


def _case_tasks():
    return {f"t{t}_{i:03d}": t for t, n in CASES_PER_TASK.items() for i in range(n)}


def _loader(case_tasks=None, identifiers=None, batches_per_task=10, **kw) -> TaskBalancedDataLoader:
    case_tasks = _case_tasks() if case_tasks is None else case_tasks
    identifiers = sorted(case_tasks) if identifiers is None else identifiers
    label_manager = LabelManager({"background": 0, "a": 1}, None)
    return TaskBalancedDataLoader(FakeDataset(identifiers), 2, [8, 8, 8], [8, 8, 8], label_manager,
                                  case_tasks=case_tasks, batches_per_task=batches_per_task, **kw)


def test_loader_groups_cases_by_task():
    loader = _loader()
    assert sorted(loader.cases_of_task) == [0, 1, 2]
    assert {t: len(c) for t, c in loader.cases_of_task.items()} == CASES_PER_TASK
    assert loader.last_task is None


def test_get_indices_is_task_balanced_and_single_task():
    np.random.seed(0)
    loader = _loader()
    case_tasks = _case_tasks()
    tasks = []
    seen_cases = {0: set(), 1: set(), 2: set()}
    for _ in range(300):
        batch = loader.get_indices()
        assert len(batch) == 2
        batch_tasks = {case_tasks[k] for k in batch}
        assert len(batch_tasks) == 1, batch
        assert loader.last_task == batch_tasks.pop()
        tasks.append(loader.last_task)
        seen_cases[loader.last_task].update(batch)
    for r in range(10):
        assert Counter(tasks[r * 30:(r + 1) * 30]) == {0: 10, 1: 10, 2: 10}
    # cases are drawn from the whole task (200 draws over 10 / 3 / 1 cases reach every case)
    assert {t: len(s) for t, s in seen_cases.items()} == CASES_PER_TASK


def _task_order(loader, n=60):
    order = []
    for _ in range(n):
        loader.get_indices()
        order.append(loader.last_task)
    return order


def test_thread_id_and_rank_change_the_task_order():
    base = _task_order(_loader())
    assert base == _task_order(_loader())  # deterministic for the same (seed, rank, thread)

    other_thread = _loader()
    other_thread.set_thread_id(1)
    thread_order = _task_order(other_thread)

    other_rank = _loader(rank=1)
    rank_order = _task_order(other_rank)

    other_seed = _loader(seed=1)
    seed_order = _task_order(other_seed)

    for order in (thread_order, rank_order, seed_order):
        assert order != base
        # every stream stays balanced per round
        assert Counter(order[:30]) == Counter(order[30:]) == {0: 10, 1: 10, 2: 10}
    assert thread_order != rank_order


def test_schedule_is_created_lazily_after_thread_id():
    loader = _loader()
    assert loader._schedule is None
    loader.set_thread_id(3)
    loader.get_indices()
    reference = TaskSchedule([0, 1, 2], 10, seed=12345 + 3)
    expected_first = next(reference)
    assert loader.last_task == expected_first


def test_only_tasks_with_cases_are_scheduled():
    case_tasks = {"a1": 0, "a2": 0, "c1": 2}  # task 1 has no case in this dataset
    loader = _loader(case_tasks=case_tasks, batches_per_task=4)
    order = _task_order(loader, 16)
    for r in range(2):
        assert Counter(order[r * 8:(r + 1) * 8]) == {0: 4, 2: 4}


def test_case_missing_from_case_tasks_raises():
    case_tasks = _case_tasks()
    identifiers = sorted(case_tasks) + ["stray_case"]
    with pytest.raises(KeyError, match="stray_case"):
        _loader(case_tasks=case_tasks, identifiers=identifiers)


def test_case_tasks_may_hold_more_cases_than_the_dataset():
    # e.g. the validation split: only its own cases are scheduled
    case_tasks = _case_tasks()
    loader = _loader(case_tasks=case_tasks, identifiers=["t0_000", "t1_000"])
    assert loader.cases_of_task == {0: ["t0_000"], 1: ["t1_000"]}
    for _ in range(10):
        batch = loader.get_indices()
        assert batch == [f"t{loader.last_task}_000"] * 2


def test_weighted_schedule_draws_tasks_in_proportion_to_their_weights():
    schedule = TaskSchedule(tasks=[0, 1, 2], batches_per_task=50, seed=0, probabilities=[351.0, 70.2, 8.7])
    counts = Counter(islice(schedule, 20000))
    shares = np.array([counts[t] for t in (0, 1, 2)]) / 20000
    assert np.allclose(shares, np.array([351.0, 70.2, 8.7]) / 429.9, atol=0.01)
    with pytest.raises(ValueError, match="one non-negative probability per task"):
        TaskSchedule(tasks=[0, 1], batches_per_task=1, seed=0, probabilities=[1.0])


def test_hermes_samples_datasets_as_the_reference():
    """Per-case weights x cases: with the reference's table AMOS-CT gets ~40 % of the batches; uniform is a switch."""
    from nnunetv2_universal.registry import TaskRegistry, TaskSpec
    from nnunetv2_universal.training.hermes_trainer import HermesTrainer
    table = {"amos_ct": (195, 1.8), "han": (39, 2.6), "mnm": (286, 0.3), "autopet": (705, 0.1), "amos_mr": (38, 1.6),
             "brain": (124, 0.4), "kits": (159, 0.3), "bcv": (23, 1.5), "lits": (99, 0.3), "thorax": (38, 0.7),
             "chaos": (45, 0.5)}
    tasks = [TaskSpec(name=n, dataset=f"Dataset{i:03d}_{n}", channels={"0": "CT"},
                      labels={"background": 0, "x": 1}, sampling_weight=w) for i, (n, (_, w)) in enumerate(table.items())]
    cases = {f"{n}_{k}": n for n, (count, _) in table.items() for k in range(count)}
    trainer = HermesTrainer.__new__(HermesTrainer)
    trainer.registry = TaskRegistry(tasks, cases)
    weights = trainer.task_sampling_weights(list(cases))
    share = weights[0] / sum(weights.values())
    assert share == pytest.approx(0.399, abs=0.002)
    trainer.dataset_sampling = "uniform"
    assert trainer.task_sampling_weights(list(cases)) is None


def test_task_groups_mix_tasks_within_a_group_only_and_keep_samples_balanced():
    """MultiTalent's batches: tasks 0 and 1 (same channels and augmentation) share batches, task 2 keeps its own."""
    np.random.seed(0)
    case_tasks = _case_tasks()
    loader = _loader(task_groups=[[0, 1], [2]])
    samples, mixed = Counter(), 0
    for _ in range(300):
        batch = loader.get_indices()
        tasks = [case_tasks[k] for k in batch]
        assert tasks[0] == loader.last_task
        assert set(tasks) <= {0, 1} or set(tasks) == {2}, tasks
        mixed += len(set(tasks)) > 1
        samples.update(tasks)
    assert mixed > 50
    assert samples[0] == pytest.approx(samples[1], rel=0.1) and samples[2] == 200  # 100 batches of task 2


def test_groups_of_one_task_draw_as_without_groups():
    draws = []
    for groups in (None, [[0], [1], [2]]):
        np.random.seed(3)
        loader = _loader(task_groups=groups)
        draws.append([loader.get_indices() for _ in range(50)])
    assert draws[0] == draws[1]
