"""Short UniSeg schedules for CPU: tests (a few iterations) and the demo (minutes). No mirroring, for speed."""
from __future__ import annotations

import os
import time

import torch

from nnunetv2_universal.training.augmenters import NoMirroring as _NoMirroring
from nnunetv2_universal.training.finetune_trainer import UniSegFinetuneTrainer
from nnunetv2_universal.training.task_heads_trainer import UniSegTrainerTaskHeads
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer
from nnunetv2_universal.training.variants.uniseg_ablations import UniSegTrainerDecoderFiLM

PAUSE_FILE_ENV = "nnUNet_universal_test_pause_file"


class _ShortSchedule:
    """Mixin for tests: two epochs with a checkpoint after each, one validation batch (with collection trainers:
    one batch per task per epoch).

    Kill drill: when the environment variable PAUSE_FILE_ENV names a file that does not exist yet, the second
    training step of epoch 1 (after checkpoint_latest of epoch 0 is on disk) creates it and waits to be killed;
    the test SIGKILLs the process and resumes with --c (the file then exists, so the resumed run does not wait).
    """

    batches_per_task_per_epoch = 1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        if hasattr(self, "registry"):  # collection trainers: one batch per task (whatever the trainer's own length)
            self.num_iterations_per_epoch = self.batches_per_task_per_epoch * len(self.registry)
        self.save_every = 1
        self.num_val_iterations_per_epoch = 1
        self._steps_this_epoch = 0

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._steps_this_epoch = 0

    def train_step(self, batch: dict) -> dict:
        result = super().train_step(batch)
        self._steps_this_epoch += 1
        pause_file = os.environ.get(PAUSE_FILE_ENV)
        if pause_file and self.current_epoch == 1 and self._steps_this_epoch == 2 and not os.path.exists(pause_file):
            with open(pause_file, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(3600)  # killed here
        return result


class UniSegTrainer_test(_NoMirroring, _ShortSchedule, UniSegTrainer):
    """Two epochs, one batch per task each, one validation batch: checks the whole path, learns nothing."""


class _DemoSchedule:
    """Mixin: the demo's schedule, 50 epochs x 8 batches per task, twice the trainer's learning rate (UniSeg:
    0.02; few iterations, so a faster start), 3 validation batches, a checkpoint every 10 epochs."""

    batches_per_task_per_epoch = 8

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 50
        self.num_iterations_per_epoch = self.batches_per_task_per_epoch * len(self.registry)
        self.num_val_iterations_per_epoch = 3
        self.initial_lr *= 2
        self.save_every = 10


class UniSegTrainer_cpuDemo(_NoMirroring, _DemoSchedule, UniSegTrainer):
    """UniSeg (the paper's network) on the demo's schedule."""


class UniSegTrainerDecoderFiLM_cpuDemo(_NoMirroring, _DemoSchedule, UniSegTrainerDecoderFiLM):
    """UniSeg with the opt-in decoder FiLM (beyond the paper) on the demo's schedule (the demo's trainer until the
    real-CT benchmark, where it does not separate the tasks within this budget)."""


class UniSegTrainerTaskHeads_cpuDemo(_NoMirroring, _DemoSchedule, UniSegTrainerTaskHeads):
    """UniSeg's backbone with MultiTalent's per-task sigmoid heads on the demo's schedule: the demo's trainer."""


class UniSegFinetuneTrainer_test(_NoMirroring, _ShortSchedule, UniSegFinetuneTrainer):
    """Two epochs of two iterations at learning rate 0: weights after training equal the loaded ones (tests)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 2
        self.initial_lr = 0.0
