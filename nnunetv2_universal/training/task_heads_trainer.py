"""UniSegTrainerTaskHeads: MultiTalent (Ulrich, Isensee et al., MICCAI 2023) on the UniSeg backbone.

One sigmoid output channel per (task, foreground class) (networks/task_heads.py), Dice + BCE with the Dice computed
over the whole batch, and the loss only on the channels of the task whose batch it is. Batches hold one task
(UniSeg's task-balanced rounds), so "the classes the batch's dataset labels" are that task's channels. No prompt:
the condition only picks which channels are read, at training and at prediction (`--task`, `--all-tasks`, stock
`nnUNetv2_predict` with $nnUNet_universal_task work as for every trainer).

DDP: every forward computes every head channel (one 1x1 convolution per level), so every parameter takes part in
every step; the rows of the other tasks' channels get an exact zero gradient.
"""
from __future__ import annotations

from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunetv2_universal.collection.task_plans import TASKS_KEY
from nnunetv2_universal.networks.task_heads import SigmoidTaskLoss
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer

TASK_HEADS_NETWORK = "nnunetv2_universal.networks.task_heads.TaskHeadsUNet"


class UniSegTrainerTaskHeads(UniSegTrainer):
    """UniSeg's encoder and decoder, MultiTalent's per-(task, class) sigmoid heads and partial-label loss."""

    network_class_name = TASK_HEADS_NETWORK
    batch_dice = True  # MultiTalent: Dice over the batch (classes absent from one image)

    @classmethod
    def network_kwargs(cls, configuration_manager) -> dict:
        settings = configuration_manager.configuration[TASKS_KEY]  # registry order
        return {**super().network_kwargs(configuration_manager),
                "task_num_classes": [int(s["num_classes"]) for s in settings.values()]}

    def _build_loss(self):
        loss = super()._build_loss()  # TaskSlicedLoss(DeepSupervisionWrapper(...)): nnU-Net's level weights
        region_loss = SigmoidTaskLoss(DC_and_BCE_loss({}, {"batch_dice": self.batch_dice, "do_bg": True,
                                                           "smooth": 1e-5, "ddp": self.is_ddp},
                                                      dice_class=MemoryEfficientSoftDiceLoss))
        if isinstance(loss.loss, DeepSupervisionWrapper):
            loss.loss.loss = region_loss
        else:
            loss.loss = region_loss
        return loss
