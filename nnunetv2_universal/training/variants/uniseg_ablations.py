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


class UniSegTrainerDecoderFiLM(UniSegTrainer):
    """Beyond the paper (opt-in): UniSeg plus a per-task FiLM (scale and shift) of every decoder stage's output,
    so the task condition reaches every resolution, not only the bottleneck."""
    network_overrides = {"decoder_film": True}


class UniSegTrainerConditionLR(UniSegTrainer):
    """The paper's network; prompt and FUSE learn at 10x the learning rate of the rest."""
    condition_lr_multiplier = 10.0


class UniSegTrainerLowestHead(UniSegTrainer):
    """The paper's network; the lowest-resolution head (next to the prompt) also gets deep-supervision weight."""
    supervise_lowest_head = True


class UniSegTrainerPromptGain(UniSegTrainer):
    """The paper's network with the selected task prompt multiplied by sqrt(bottleneck channels) before it joins
    the bottleneck (same parameters; the one prompt channel weighs as much as all image channels together)."""
    network_overrides = {"prompt_gain": "auto"}
