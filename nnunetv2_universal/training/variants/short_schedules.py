"""Short UniSeg schedules for CPU: tests (a few iterations) and the demo (minutes). No mirroring, for speed."""
from __future__ import annotations

import torch

from nnunetv2_universal.training.finetune_trainer import UniSegFinetuneTrainer
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer


class _NoMirroring:
    """Mixin: no mirroring augmentation and no mirroring test-time augmentation (8x cheaper inference)."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


class _OneEpoch:
    """Mixin for tests: one epoch, one validation batch (with collection trainers: one batch per task)."""

    batches_per_task_per_epoch = 1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_val_iterations_per_epoch = 1


class UniSegTrainer_test(_NoMirroring, _OneEpoch, UniSegTrainer):
    """One epoch, one batch per task, one validation batch: checks the whole path, learns nothing."""


class UniSegTrainer_cpuDemo(_NoMirroring, UniSegTrainer):
    """The demo's schedule: 50 epochs x 8 batches per task, lr 0.02 (few iterations, so a faster start)."""

    batches_per_task_per_epoch = 8

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 50
        self.num_val_iterations_per_epoch = 3
        self.initial_lr = 2e-2
        self.save_every = 10


class UniSegFinetuneTrainer_test(_NoMirroring, UniSegFinetuneTrainer):
    """One epoch of two iterations at learning rate 0: weights after training equal the loaded ones (tests)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.initial_lr = 0.0
