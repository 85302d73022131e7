"""The UniSeg paper's ablations (Table 4) as one-attribute trainer variants (-tr NAME). Each trains on the same
collection and plans as UniSegTrainer; only the network changes."""
from __future__ import annotations

from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer


class UniSegTrainerFixedPrompt(UniSegTrainer):
    """Fixed Prompt: the universal prompt is zeros and never updated (FUSE still sees it)."""
    network_overrides = {"prompt_mode": "fixed"}


class UniSegTrainerMultiplePrompts(UniSegTrainer):
    """Multiple Prompts: one independent learned prompt per task, used directly (no universal prompt, no FUSE)."""
    network_overrides = {"prompt_mode": "per_task"}


class UniSegTrainerUniSegT(UniSegTrainer):
    """UniSeg-T: the task prompt enters at the end of the decoder (concatenated to every head's input) instead of
    the decoder's start."""
    network_overrides = {"prompt_position": "output"}


class DoDNetTrainer(UniSegTrainer):
    """DoDNet-style baseline: one-hot task code -> controller -> dynamic segmentation head."""
    network_class_name = "nnunetv2_universal.networks.dodnet.DoDNetNetwork"
