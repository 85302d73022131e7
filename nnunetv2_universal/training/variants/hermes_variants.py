"""Hermes variants: the reference's attention without null-token masking, adding tasks with everything else
frozen, and a short schedule for tests."""
from __future__ import annotations

import torch

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunetv2_universal.training.hermes_trainer import HermesTrainer, freeze_all_but_new_task_rows
from nnunetv2_universal.training.variants.short_schedules import _NoMirroring, _ShortSchedule


class HermesTrainerUnmaskedNull(HermesTrainer):
    """As the reference: null task tokens are visible keys for the voxels."""
    network_overrides = {"mask_null_tokens": False}


class HermesTrainerNewTasksOnly(HermesTrainer):
    """Incremental learning: train only the task-prior rows of tasks that are new (all rows after
    `frozen_task_rows`, set it to the old model's task count) and keep every other weight frozen."""

    frozen_task_rows = 0

    def configure_optimizers(self):
        network = self._plain_network()
        freeze_all_but_new_task_rows(network, self.frozen_task_rows)
        optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=self.initial_lr,
                                      weight_decay=0.0)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class HermesTrainer_test(_NoMirroring, _ShortSchedule, HermesTrainer):
    """Tests: two epochs, one batch per task each."""
