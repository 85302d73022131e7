"""HermesTrainer: context-prior learning on a collection (plan with `-pl hermes` for the reference network; on
UniSeg plans the network is built on nnU-Net's residual encoder).

Global tasks are the registry's structures: one per (task, foreground label), except labels that share a structure
key (AMOS CT and MR, CHAOS T1 and T2) share one. Each batch is one dataset (the collection's loader; datasets drawn
in proportion to their size as the reference's sampler, `dataset_sampling = "uniform"` as a switch): its global task
ids plus one null token, and its modality id (the task's main modality, PET for PET/CT, in `modality_vocabulary`,
otherwise -1 = "unknown", e.g. MR of unknown sequence). Loss per deep-supervision level (nnU-Net's weights): BCE +
adaptive Tversky (alpha = clamp(FP / (FP + FN), 0.2, 0.8)) averaged over the valid (sample, task) pairs, null
columns masked; plus 0.01 x cross-entropy of the modality classifier (ignoring unknown modalities). Optimiser as
the reference: LAMB (timm) lr 2e-3, weight decay 1e-5, 5-epoch exponential warm-up then poly; an EMA (0.99) of the
weights is validated and saved. No mirroring in training or test-time augmentation (left and right organs).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.helpers import dummy_context
from timm.optim import Lamb
from torch import autocast, nn

from nnunetv2_universal.collection.task_plans import TASKS_KEY
from nnunetv2_universal.registry import shared_structure_ids
from nnunetv2_universal.training.augmenters import NoMirroring
from nnunetv2_universal.training.ema import EMAWeights
from nnunetv2_universal.training.steps import backward_and_step
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer

HERMES_NETWORK = "nnunetv2_universal.networks.hermes.HermesNetwork"
MODALITY_VOCABULARY = ("CT", "PET", "T1", "T2", "cineMRI")


def modality_id(name: str, vocabulary: Sequence[str] = MODALITY_VOCABULARY) -> int:
    lowered = [v.lower() for v in vocabulary]
    return lowered.index(name.lower()) if name.lower() in lowered else -1


def modality_loss(logits: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ignoring unknown (-1) modalities; 0 (still connected to the classifier, for DDP) if all are."""
    if (modality >= 0).any():
        return F.cross_entropy(logits, modality, ignore_index=-1)
    return logits.sum() * 0.0


def adaptive_tversky(probs, target, weight, smooth: float = 1e-6):
    """Per (b, t) Tversky loss with alpha = clamp(FP / (FP + FN), 0.2, 0.8); weighted mean over (b, t)."""
    dims = tuple(range(2, probs.ndim))
    tp, fp, fn = (probs * target).sum(dims), (probs * (1 - target)).sum(dims), ((1 - probs) * target).sum(dims)
    alpha = (fp / (fp + fn + smooth)).clamp(0.2, 0.8)
    loss = 1 - tp / (tp + alpha * fp + (1 - alpha) * fn + smooth)
    return (loss * weight).sum() / weight.sum().clamp_min(1)


def hermes_segmentation_loss(logits, labels, task_labels, valid):
    """logits (B, T, ...); labels (B, 1, ...) task-local; task_labels (T,) local label of each column; valid (B, T)."""
    target = (labels == task_labels.reshape(1, -1, *[1] * (labels.ndim - 2))).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(2)
    bce = (bce * valid).sum() / valid.sum().clamp_min(1)
    return bce + adaptive_tversky(torch.sigmoid(logits), target, valid)


class WarmupPolyLRScheduler(PolyLRScheduler):
    """Per-epoch warm-up then nnU-Net's poly decay over all epochs (the reference's schedule)."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 5,
                 shape: str = "exponential"):
        if shape not in ("exponential", "linear"):
            raise ValueError(f"warm-up shape must be 'exponential' or 'linear', got {shape!r}")
        self.warmup_steps, self.shape = warmup_steps, shape
        super().__init__(optimizer, initial_lr, max_steps)

    def step(self, current_step=None):
        super().step(current_step)
        step = self.ctr - 1 if current_step is None or current_step == -1 else current_step
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            scale = math.exp(10 * (fraction - 1)) if self.shape == "exponential" else (step + 1) / self.warmup_steps
            for group in self.optimizer.param_groups:
                group["lr"] = self.initial_lr * scale
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class HermesTrainer(EMAWeights, NoMirroring, UniSegTrainer):
    """Hermes on a UniSeg collection (-p UniSegPlans / UniSegPlansCPUDemo)."""

    network_class_name = HERMES_NETWORK
    modality_vocabulary = MODALITY_VOCABULARY
    modality_loss_weight = 0.01
    network_overrides: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr, self.weight_decay = 2e-3, 1e-5
        self.num_epochs, self.num_iterations_per_epoch = 200, 400  # the reference: 200 x 400 (batch 16 on 8 GPUs)
        self.task_global_ids = self.registry.structure_ids()
        self.task_modality = [modality_id(t.main_modality, self.modality_vocabulary) for t in self.registry]

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> nn.Module:
        settings = configuration_manager.configuration[TASKS_KEY]
        global_ids = shared_structure_ids([s.get("structures") or [f"{name}/{label}" for label in
                                                                   range(1, s["num_classes"])]
                                           for name, s in settings.items()])
        modalities = [modality_id(s.get("main_modality", s.get("modalities", ["?"])[0]), cls.modality_vocabulary)
                      for s in settings.values()]
        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        kwargs.setdefault("n_blocks_per_stage", kwargs.pop("n_conv_per_stage", 2))
        kwargs.update(num_global_tasks=1 + max(max(ids) for ids in global_ids), task_global_ids=global_ids,
                      task_modality_ids=modalities, num_modalities=len(cls.modality_vocabulary),
                      **cls.network_overrides)
        return cls.network_for_plans(HERMES_NETWORK, kwargs, plans_manager, configuration_manager, num_input_channels,
                                     num_output_channels, enable_deep_supervision)

    optimizer_name = "lamb"  # the reference (apex FusedLAMB; timm's Lamb here); "adamw" is a switch
    warmup_epochs = 5
    warmup_shape = "exponential"  # the reference: lr * exp(10 (epoch / 5 - 1)); "linear" is a switch

    def configure_optimizers(self):
        params = [p for p in self.network.parameters() if p.requires_grad]
        if self.optimizer_name == "lamb":
            optimizer = Lamb(params, lr=self.initial_lr, betas=(0.9, 0.999), eps=1e-5, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=self.initial_lr, weight_decay=self.weight_decay)
        else:
            raise ValueError(f"optimizer_name must be 'lamb' or 'adamw', got {self.optimizer_name!r}")
        return optimizer, WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs,
                                                self.warmup_shape)

    dataset_sampling = "size"  # the reference: tasks drawn by summed case weights; "uniform": UniSeg's rounds

    def task_sampling_weights(self, training_cases):
        if self.dataset_sampling == "uniform":
            return None
        if self.dataset_sampling != "size":
            raise ValueError(f"dataset_sampling must be 'size' or 'uniform', got {self.dataset_sampling!r}")
        weights: dict = {}
        for case in training_cases:
            task = self.registry.task_of_case(case)
            weights[task] = weights.get(task, 0.0) + self.registry.task(task).sampling_weight
        return weights

    def _build_loss(self):
        return None  # compute_loss below

    def batch_tasks(self, keys, task: Optional[int] = None):
        """(registry task, task_ids (B, T + 1) with a null column, local labels (T + 1,), valid (B, T + 1),
        modality ids (B,)); `task` overrides the batch's own task (the condition diagnostic)."""
        task = self.registry.task_of_batch(keys) if task is None else task
        count = self.registry.num_classes(task) - 1
        b = len(keys)
        ids = torch.full((b, count + 1), -1, dtype=torch.long, device=self.device)
        ids[:, :count] = torch.tensor(self.task_global_ids[task], device=self.device)
        labels = torch.arange(1, count + 2, device=self.device)
        labels[-1] = -1  # the null column matches nothing
        valid = (ids >= 0).float()
        modality = torch.full((b,), self.task_modality[task], dtype=torch.long, device=self.device)
        return task, ids, labels, valid, modality

    def compute_loss(self, output, target, labels, valid, modality, modality_logits):
        outputs = output if isinstance(output, (list, tuple)) else [output]
        targets = target if isinstance(target, (list, tuple)) else [target]
        weights = np.array([1 / (2 ** i) for i in range(len(outputs))])
        if len(outputs) > 1:
            weights[-1] = 0  # nnU-Net's deep-supervision weights: lowest resolution off, normalised
        weights = weights / weights.sum()
        loss = sum(w * hermes_segmentation_loss(o, t, labels, valid) for w, o, t in zip(weights, outputs, targets)
                   if w > 0)
        return loss + self.modality_loss_weight * modality_loss(modality_logits, modality)

    def _forward_and_loss(self, batch):
        task, ids, labels, valid, modality = self.batch_tasks(batch["keys"])
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device) for t in target] if isinstance(target, list) else target.to(self.device)
        network = self._plain_network()
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data, task_ids=ids, modality_ids=modality)
            loss = self.compute_loss(output, target, labels, valid, modality, network.last_modality_logits)
        return task, output, target, labels, loss

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        _, _, _, _, loss = self._forward_and_loss(batch)
        backward_and_step(self, loss)
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        with torch.no_grad():
            task, output, target, labels, loss = self._forward_and_loss(batch)
        if isinstance(output, (list, tuple)):
            output, target = output[0], target[0]
        count = len(labels) - 1
        self._record_other_tasks(batch, task, (output[:, :count] > 0).any(1))
        predicted = (output[:, :count] > 0).float()  # sigmoid > 0.5
        truth = (target == labels[:count].reshape(1, -1, *[1] * (target.ndim - 2))).float()
        axes = [0] + list(range(2, output.ndim))
        tp, fp, fn = (predicted * truth).sum(axes), (predicted * (1 - truth)).sum(axes), \
            ((1 - predicted) * truth).sum(axes)
        return {"loss": loss.detach().cpu().numpy(), "task": task, "tp_hard": tp.cpu().numpy(),
                "fp_hard": fp.cpu().numpy(), "fn_hard": fn.cpu().numpy()}

    @torch.no_grad()
    def _record_other_tasks(self, batch: dict, task: int, own_fg: torch.Tensor) -> None:
        """Condition diagnostic: foreground of the same images under every other task with their channel count."""
        data = batch["data"].to(self.device, non_blocking=True)
        for other in self.registry.tasks_for_channels(data.shape[1]):
            if other == task:
                continue
            _, ids, labels, _, modality = self.batch_tasks(batch["keys"], other)
            with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
                out = self.network(data, task_ids=ids, modality_ids=modality)
            out = out[0] if isinstance(out, (list, tuple)) else out
            self.record_condition_overlap(task, other, own_fg, (out[:, :len(labels) - 1] > 0).any(1))

    def _condition_batch(self, keys) -> int:  # not used: Hermes passes task and modality ids explicitly
        return self.registry.task_of_batch(keys)


def new_task_rows(state_dict: dict, new_tasks: int) -> dict:
    """State dict with `new_tasks` task-prior rows inserted before every fusion point's null row (copies of the
    null row as a neutral start), for adding tasks to a trained model."""
    out = dict(state_dict)
    for key, table in state_dict.items():
        if key.endswith(".task_table"):
            out[key] = torch.cat((table[:-1], table[-1:].expand(new_tasks, -1), table[-1:]))
    return out




def freeze_all_but_new_task_rows(network: nn.Module, old_rows: int) -> None:
    """Only the task-prior rows from `old_rows` on (excluding the null row) keep receiving gradient."""
    def keep_old_rows(grad):
        grad = grad.clone()
        grad[:old_rows] = 0
        grad[-1] = 0
        return grad
    for name, p in network.named_parameters():
        trainable = name.endswith(".task_table")
        p.requires_grad_(trainable)
        if trainable:
            p.register_hook(keep_old_rows)
