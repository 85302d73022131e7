"""Hermes variants: switches away from the reference's defaults (attention without null-token masking, AdamW,
uniform dataset sampling, no EMA), adding tasks with everything else frozen, and a short schedule for tests."""
from __future__ import annotations

import torch

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunetv2_universal.training.hermes_trainer import HermesTrainer, freeze_all_but_new_task_rows
from nnunetv2_universal.training.variants.short_schedules import _ShortSchedule


class HermesTrainerUnmaskedNull(HermesTrainer):
    """As the reference: null task tokens are visible keys for the voxels."""
    network_overrides = {"mask_null_tokens": False}


class HermesTrainerAdamW(HermesTrainer):
    """AdamW (lr 2e-3, wd 1e-5) with a linear warm-up instead of the reference's LAMB and exponential warm-up."""
    optimizer_name = "adamw"
    warmup_shape = "linear"


class HermesTrainerUniformSampling(HermesTrainer):
    """Every dataset equally often (UniSeg's task-balanced rounds) instead of the reference's weighted sampler."""
    dataset_sampling = "uniform"


class HermesTrainerNoEMA(HermesTrainer):
    """Validate and save the raw weights (no EMA)."""
    ema_decay = None


class HermesTrainerNoDeepSupervision(HermesTrainer):
    """Hermes-R as the reference trains it: the full-resolution output only."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False


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


class HermesTrainer_test(_ShortSchedule, HermesTrainer):
    """Tests: two epochs, one batch per task each."""
