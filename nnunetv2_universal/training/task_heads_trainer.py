"""UniSegTrainerTaskHeads: MultiTalent (Ulrich, Isensee et al., MICCAI 2023) on the UniSeg backbone.

One sigmoid output channel per (task, foreground class) (networks/task_heads.py), Dice + BCE with the Dice computed
over the batch, and each image's loss only on the channels of its own task. Batches hold one task (UniSeg's
task-balanced rounds); `UniSegTrainerTaskHeadsMixedBatches` mixes tasks in a batch as MultiTalent's sampler does
(same real-CT result, docs/explanation/learning-the-condition.md). No prompt: the condition only picks which
channels are read, at training and at prediction (`--task`, `--all-tasks`, stock `nnUNetv2_predict` with
$nnUNet_universal_task work as for every trainer).

DDP: every forward computes every head channel (one 1x1 convolution per level), so every parameter takes part in
every step; the rows of channels no sample of a rank's batch trains get an exact zero gradient. The Dice is over each
rank's own batch (ranks hold different tasks, so their class counts differ: nothing to gather).
"""
from __future__ import annotations

from typing import Optional

from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunetv2_universal.collection.task_plans import TASKS_KEY
from nnunetv2_universal.conditioning import Condition
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
                                                           "smooth": 1e-5, "ddp": False},
                                                      dice_class=MemoryEfficientSoftDiceLoss))
        if isinstance(loss.loss, DeepSupervisionWrapper):
            loss.loss.loss = region_loss
        else:
            loss.loss = region_loss
        return loss

    def _condition_batch(self, keys) -> Optional[int]:
        """A batch of one task as UniSeg's; a mixed batch: each sample reads, and is scored on, its own task."""
        tasks = [self.registry.task_of_case(k) for k in keys]
        if len(set(tasks)) == 1:
            self.loss.sample_groups = None
            return super()._condition_batch(keys)
        self._plain_network().condition = Condition(sample_tasks=tuple(tasks))
        self.loss.sample_groups = [([b for b, x in enumerate(tasks) if x == t], self.registry.num_classes(t))
                                   for t in sorted(set(tasks))]
        return None


class UniSegTrainerTaskHeadsMixedBatches(UniSegTrainerTaskHeads):
    """MultiTalent's sampling: a batch mixes the tasks whose images share channels and augmentation (each task keeps
    its share of samples); each sample is scored on its own task's channels, the Dice over each task's samples."""

    mix_tasks_in_batch = True
