"""M4oE variants: the paper's Table 4 ablations (MoE in encoder only / decoder only / both, with and without the
gate), the released code's gate, and short schedules for tests. Same collection and plans as UniSegTrainer."""
from __future__ import annotations

import torch

from nnunetv2_universal.training.m4oe_trainer import M4oEPretrainTrainer, M4oESwinTrainer, M4oETrainer
from nnunetv2_universal.training.variants.short_schedules import _NoMirroring


class M4oETrainerEncoderOnly(M4oETrainer):
    network_overrides = {**M4oETrainer.network_overrides, "moe_in": "encoder"}


class M4oETrainerDecoderOnly(M4oETrainer):
    network_overrides = {**M4oETrainer.network_overrides, "moe_in": "decoder"}


class M4oETrainerNoGate(M4oETrainer):
    """Experts averaged with equal weights (no gating network)."""
    network_overrides = {**M4oETrainer.network_overrides, "gate_mode": "none"}


class M4oETrainerNoMoE(M4oETrainer):
    """Plain U-Net with per-dataset heads (no experts)."""
    network_overrides = {**M4oETrainer.network_overrides, "moe_in": "none"}


class M4oETrainerCodeGate(M4oETrainer):
    """The released code's gate: channel softmax shared by all experts."""
    network_overrides = {**M4oETrainer.network_overrides, "gate_mode": "code_compat"}


class _Short:
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_val_iterations_per_epoch = 1


class M4oETrainer_test(_NoMirroring, _Short, M4oETrainer):
    batches_per_task_per_epoch = 1


class M4oEPretrainTrainer_test(_NoMirroring, _Short, M4oEPretrainTrainer):
    batches_per_task_per_epoch = 1


class M4oESwinTrainer_test(_NoMirroring, _Short, M4oESwinTrainer):
    batches_per_task_per_epoch = 1
