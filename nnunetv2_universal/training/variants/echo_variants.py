"""Echo trainer variants: the paper's ablations (Tables 3-4), the paper's loss form, and a short schedule for tests.

Each variant only sets class attributes; predict with the same -tr name (the network options are part of the
trainer, the plans stay the same).
"""
from __future__ import annotations

import torch

from nnunetv2_universal.training.echo_trainer import EchoPromptTrainer
from nnunetv2_universal.training.variants.short_schedules import _ShortSchedule


class EchoPromptTrainerNoText(EchoPromptTrainer):
    """No text path: no pixel-text score maps or loss; the controller gets one-hot class codes."""
    network_overrides = {"text_mode": "none"}


class EchoPromptTrainerOneHot(EchoPromptTrainer):
    """One-hot class codes instead of ClinicalBERT embeddings, everywhere the text is used."""
    network_overrides = {"text_mode": "onehot"}


class EchoPromptTrainerRawText(EchoPromptTrainer):
    """Mean-pooled prompt embeddings as they are, without subtracting the bare template's embedding (nearly
    parallel across the classes: LV_epi collapsed onto LV_endo in benchmarks/echo_synthetic.py)."""
    text_relative_to_template = False


class EchoPromptTrainerViewGiven(EchoPromptTrainer):
    """The view id selects the prompt slots in training and at prediction (not view-agnostic: predict with
    nnUNetv2_universal_predict_echo --view)."""
    network_overrides = {"prompt_selection": "view"}


class EchoPromptTrainerPaperLoss(EchoPromptTrainer):
    """The paper's total loss as written: (1 - lambda(t)) L_seg - lambda(t) L_pr, the pixel-text term inside L_seg."""
    loss_mode = "paper"


class EchoPromptTrainerBCEDice(EchoPromptTrainer):
    """Masked BCE + masked soft Dice for the segmentation term instead of the paper's BCE."""
    seg_loss = "bce_dice"


class EchoPromptTrainerFullResScores(EchoPromptTrainer):
    """Score maps at full resolution, concatenated to the head input (the paper scores at a lower resolution)."""
    network_overrides = {"score_map_stage": 0}


class EchoPromptTrainerNnUNetAugmentation(EchoPromptTrainer):
    """nnU-Net's augmentation pipeline (scaling, noise, blur, intensity, low resolution, gamma) with +-30 degree
    in-plane rotation and no mirroring, instead of the paper's flip / rotation / shear."""
    augmentation = "nnunet"


class EchoPromptTrainer250Iterations(EchoPromptTrainer):
    """nnU-Net's fixed 250 iterations per epoch instead of one pass over the training clips."""
    epoch_is_one_pass = False


class EchoPromptTrainer_test(_ShortSchedule, EchoPromptTrainer):
    """Two epochs of two iterations and one validation batch (tests)."""
    epoch_is_one_pass = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 2


class _CPUBench:
    """Mixin for benchmarks/echo_synthetic.py: the trainer's defaults (one-pass epochs, paper losses and
    augmentation) but 20 epochs and MADGRAD lr 1e-3, so that the tiny synthetic collection trains on a CPU."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 20
        self.initial_lr = 1e-3
        self.save_every = 20


class EchoPromptTrainer_cpuBench(_CPUBench, EchoPromptTrainer):
    """The default model on the CPU benchmark schedule."""


class EchoPromptTrainerOneHot_cpuBench(_CPUBench, EchoPromptTrainerOneHot):
    """One-hot class codes on the CPU benchmark schedule."""


class EchoPromptTrainerRawText_cpuBench(_CPUBench, EchoPromptTrainerRawText):
    """Raw mean-pooled text on the CPU benchmark schedule."""
