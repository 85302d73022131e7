"""Fine-tuning UniSeg's backbone on a downstream dataset, as the paper: 100 epochs x 250 iterations = 25,000
iterations, lr 0.01, SGD nesterov 0.99, nothing frozen, new heads. The network (UniSegBackbone) comes from the plans
written by nnUNetv2_universal_transfer_plans; weights come through stock -pretrained_weights."""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_universal.training.checkpointing import SafeCheckpoints
from nnunetv2_universal.training.trainer_defaults import PluginTrainerDefaults


class UniSegFinetuneTrainer(PluginTrainerDefaults, SafeCheckpoints, nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 100
        self.initial_lr = 1e-2
