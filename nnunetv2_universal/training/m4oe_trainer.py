"""M4oE trainers on a UniSeg-style collection (same plans; the network is swapped like DoDNetTrainer's).

Two phases linked by nnU-Net's `-pretrained_weights`:
1. `M4oEPretrainTrainer`: masked image modelling as Swin-MAE (75 % of 16-pixel blocks masked and replaced by a
   learned mask token, MSE on the masked pixels only), each image routed to its modality's expert, no labels used.
   AdamW 1e-3, betas (0.9, 0.95), weight decay 0.05 (Swin-MAE).
2. `M4oETrainer`: loads encoder, decoder and experts, starts the gates at zero (every expert weighted 1/E) and
   fine-tunes everything on segmentation with the per-dataset heads (nnU-Net's SGD schedule, DC+CE, deep
   supervision, task-balanced batches).

Experts: one per modality family in `expert_modalities`, by default the paper's three (Fig. 2): CT, CE-MRI
(contrast-enhanced MRI: ATLAS) and MRI (AMOS-MR); a task's expert is the family of its first channel name in the
registry (PET/CT -> CT; `modality_family`). `M4oETrainerTwoExperts`: CT and MR (CE-MRI joins MR). To add a
modality to a trained model see docs/how-to/m4oe-recipe.md.
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunetv2_universal.training.steps import backward_and_step
from nnunetv2_universal.training.task_logging import TASK_DICE_KEY
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer

M4OE_NETWORK = "nnunetv2_universal.networks.m4oe.M4oEUNet"


CONTRAST_ENHANCED_MR = ("CE-MRI", "CEMRI", "CE-MR", "CE_MRI", "T1CE", "T1C", "T1GD", "CET1", "CE-T1", "T1+C")


def modality_family(channel_name: str, families=("CT", "CE-MRI", "MRI")) -> str:
    """The expert family of an nnU-Net channel name: 'CT', 'CE-MRI' (contrast-enhanced MR), 'MRI', 'PET' or the
    upper-cased name. With an "MR" family (two experts) both MR kinds map to it."""
    name = channel_name.strip().upper()
    if name.startswith("CT"):
        return "CT"
    if "PET" in name or name == "SUV":
        return "PET"
    if name in CONTRAST_ENHANCED_MR or name.startswith(("CE-", "CE_")):
        family = "CE-MRI"
    elif name.startswith(("MR", "T1", "T2", "FLAIR", "ADC", "DWI", "CINE", "NONCT")):
        family = "MRI"
    else:
        return name
    return "MR" if family not in families and "MR" in families else family


class M4oETrainer(UniSegTrainer):
    """Phase 2 (or training from scratch): gated experts + per-dataset heads."""

    network_class_name = M4OE_NETWORK
    expert_modalities = ("CT", "CE-MRI", "MRI")
    network_overrides = {"num_experts": 3}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.network_overrides.get("num_experts", 3) != len(self.expert_modalities):
            raise ValueError(f"{type(self).__name__}: num_experts {self.network_overrides.get('num_experts')} != "
                             f"{len(self.expert_modalities)} expert modalities {self.expert_modalities}")
        self.expert_of_task = []
        for task in self.registry:
            family = modality_family(task.modalities[0], self.expert_modalities)
            if family not in self.expert_modalities:
                raise ValueError(f"task {task.name}: modality {task.modalities[0]!r} ({family}) has no expert; this "
                                 f"trainer's experts are {list(self.expert_modalities)} (add one: "
                                 f"docs/how-to/m4oe-recipe.md)")
            self.expert_of_task.append(self.expert_modalities.index(family))

    def on_train_start(self):
        super().on_train_start()
        if self.current_epoch == 0:  # fresh start or phase 2 after -pretrained_weights: gates begin uniform
            self._plain_network().reset_gates()
        self._plain_network().route(None)


class M4oEPretrainTrainer(M4oETrainer):
    """Phase 1: masked image modelling with hard routing to the modality's expert (no labels needed)."""

    # all_gates: the checkpoint then loads into phase 2 of every gate mode (phase 1 uses no gate)
    network_overrides = {**M4oETrainer.network_overrides, "with_reconstruction_head": True, "all_gates": True}
    mask_ratio = 0.75
    mask_block = 16  # pixels per block edge (Swin-MAE: 4 x 4 tokens of 4 x 4 pixels); clipped to small patches

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-3
        self.weight_decay = 0.05
        self.enable_deep_supervision = False

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, betas=(0.9, 0.95),
                                      weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def on_train_start(self):
        super(M4oETrainer, self).on_train_start()

    def block_mask(self, shape) -> torch.Tensor:
        """(B, 1, *spatial) float mask, 1 on masked blocks (mask_ratio of the blocks, per sample)."""
        b, spatial = shape[0], shape[2:]
        blocks = [min(self.mask_block, s) for s in spatial]
        grid = [-(-s // k) for s, k in zip(spatial, blocks)]
        n = int(np.prod(grid))
        keep = torch.rand(b, n, device=self.device).argsort(1) < round(self.mask_ratio * n)
        mask = keep.float().reshape(b, 1, *grid)
        for axis, k in enumerate(blocks):
            mask = mask.repeat_interleave(k, dim=2 + axis)
        return mask[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]

    def reconstruction_loss(self, data: torch.Tensor, keys) -> torch.Tensor:
        task = self.registry.task_of_batch(keys)
        network = self._plain_network()
        network.route(torch.full((data.shape[0],), self.expert_of_task[task], device=self.device))
        try:
            mask = self.block_mask(data.shape)  # the network puts its learned mask token there
            reconstruction = self.network(data, reconstruct=True, mask=mask)[:, :data.shape[1]]
        finally:
            network.route(None)
        error = F.mse_loss(reconstruction, data, reduction="none") * mask
        return error.sum() / (mask.sum() * data.shape[1]).clamp_min(1)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.reconstruction_loss(data, batch["keys"])
        backward_and_step(self, loss)
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        with torch.no_grad():
            loss = self.reconstruction_loss(batch["data"].to(self.device, non_blocking=True), batch["keys"])
        return {"loss": loss.detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        loss = float(np.mean([o["loss"] for o in val_outputs]))
        self.logger.log("val_losses", loss, self.current_epoch)
        # nnU-Net's checkpoint selection reads a Dice; a reconstruction score in (0, 1] stands in for it
        self.logger.log("mean_fg_dice", 1.0 / (1.0 + loss), self.current_epoch)
        self.logger.log("dice_per_class_or_region", [1.0 / (1.0 + loss)], self.current_epoch)
        self.logger.log(TASK_DICE_KEY, {}, self.current_epoch)
        self.log_condition_sensitivity(self.registry.names)  # nothing conditioned to compare: logged as NaN

    def on_epoch_end(self):
        super(UniSegTrainer, self).on_epoch_end()

    final_validation_runs = False

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("phase 1 (masked image modelling): no segmentation to validate")


class _SwinPlans:
    """Mixin: the plans name the Swin-UNet (template `m4oe_swin`, configuration 2d); no deep supervision."""

    network_class_name = None
    plans_network_suffixes = (".SwinUNetMoE",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    def set_deep_supervision_enabled(self, enabled: bool):
        pass


class M4oESwinTrainer(_SwinPlans, M4oETrainer):
    """M4oE's own network (2D Swin-UNet with M4oE MLPs), phase 2, with the paper's recipe: AdamW, weight decay 1e-4
    (batch 36 from the template); nnU-Net's CE + Dice and poly schedule."""

    adamw_lr = 1e-4  # not in our notes on the paper; AdamW's common transformer fine-tuning rate

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.adamw_lr
        self.weight_decay = 1e-4

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class M4oESwinTrainerReleasedCode(M4oESwinTrainer):
    """The released code's recipe: SGD momentum 0.9, weight decay 1e-4, lr 0.01 x 36 / 24, poly 0.9, and
    L = 0.4 CE + 0.7 Dice."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 0.01 * 36 / 24

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, momentum=0.9,
                                    weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _build_loss(self):
        loss = super()._build_loss()  # TaskSlicedLoss(DC_and_CE_loss): no deep supervision here
        loss.loss.weight_ce, loss.loss.weight_dice = 0.4, 0.7
        return loss


class M4oESwinPretrainTrainer(_SwinPlans, M4oEPretrainTrainer):
    """M4oE's own network, phase 1 (masked image modelling, hard routing)."""
