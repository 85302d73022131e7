"""EchoPromptTrainer: nnU-Net's trainer for the view-agnostic echocardiography model on an echo collection.

Paper defaults: MADGRAD, lr 1e-4, batch 5 (from the plans template), 100 epochs of one pass over the training
clips each (iterations per epoch = ceil(training clips / batch)). Augmentation: random left-right flip, in-plane
rotation within +-30 degrees and shear, never a flip in time. Targets are nnU-Net regions (LV_epi = labels 1+2,
LV_endo = label 1) plus the ignore channel that marks un-annotated frames. Every loss sees only annotated frames and
only the classes a case's dataset annotates (`echo_case_metadata[case].annotated_classes`: EchoNet has LV_endo
only), so both get exactly zero gradient.
Before the first step the SAM query of every case is computed once from its (unaugmented) first frame and cached
in the preprocessed folder; training steps read the cache and never run SAM. ClinicalBERT embeddings of the class
prompts are computed once and stored in the network's buffer (saved with every checkpoint).

Losses (the paper's): L_seg = lambda1 L_pixel-text + lambda2 L_BCE with lambda1 = lambda2 = 1; L_pixel-text is a
cross-entropy (binary, per class: the classes are nested regions) on the score maps / 0.07 at their reduced
resolution, L_BCE the masked BCE of the logits (`seg_loss = "bce_dice"` adds a masked Dice). Total (`loss_mode`):
"safe" (default) L_seg - lambda(t) w_pr L_pr with w_pr = 1; "paper" (1 - lambda(t)) L_seg - lambda(t) L_pr, where
lambda(t) = exp(-5 (1 - t / t_max)^2) over training iterations reaches 1 at the last one, i.e. the paper's form
stops training the segmentation at the end (docs/explanation/echo-model.md).
"""
from __future__ import annotations

import math
import os
from functools import partial
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from batchgenerators.utilities.file_and_folder_operations import join
from madgrad import MADGRAD
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch import distributed as dist

from nnunetv2_universal.echo.augmentation import paper_training_transforms
from nnunetv2_universal.echo.metadata import EchoMetadata
from nnunetv2_universal.echo.query_encoder import QueryCache, load_sam_query_encoder, sam_input
from nnunetv2_universal.echo.text_embeddings import class_text_embeddings
from nnunetv2_universal.training.steps import backward_and_step
from nnunetv2_universal.training.augmenters import wrap_in_augmenters
from nnunetv2_universal.training.checkpointing import SafeCheckpoints
from nnunetv2_universal.training.trainer_defaults import PluginTrainerDefaults
from nnunetv2_universal.training.condition_diagnostic import ConditionSensitivityLogging
from nnunetv2_universal.training.task_logging import TASK_DICE_KEY, TaskAwareLocalLogger

ECHO_NETWORK = "nnunetv2_universal.networks.echo_prompt.EchoPromptNetwork"
LOSS_MODES = ("safe", "paper")
SEG_LOSSES = ("bce", "bce_dice")
AUGMENTATIONS = ("paper", "nnunet")


def epoch_iterations(clips: int, batch_size: int) -> int:
    """Iterations of one pass over `clips` clips in batches of `batch_size` (the last batch may be partial)."""
    return max(1, math.ceil(clips / batch_size))


def ramp(progress: float) -> float:
    """lambda(t) = exp(-5 (1 - t/t_max)^2), progress = t / t_max in [0, 1]."""
    return math.exp(-5.0 * (1.0 - min(max(progress, 0.0), 1.0)) ** 2)


class WholeClipDataLoader(nnUNetDataLoader):
    """nnU-Net's loader, but every patch starts at frame 0 in time: foreground oversampling would otherwise centre
    the patch on an annotated frame and shift the clip (frame 0 = ED no longer holds, and the cached query no
    longer matches). Space is sampled as nnU-Net does."""

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        lbs, ubs = super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)
        lbs[0], ubs[0] = 0, self.patch_size[0]
        return lbs, ubs


def _weights(logits: torch.Tensor, frame_mask: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    return frame_mask * available.reshape(*available.shape, *[1] * (logits.ndim - 2))


def masked_bce(logits: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor,
               available: torch.Tensor) -> torch.Tensor:
    """Mean BCE over annotated voxels of available classes.

    logits, target (B, K, *spatial); frame_mask (B, 1, *spatial), 1 on annotated frames; available (B, K).
    Masked voxels and unavailable (sample, class) pairs contribute exactly zero gradient."""
    weight = _weights(logits, frame_mask, available)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * weight).sum() / weight.sum().clamp_min(1.0)


def masked_dice(logits: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor, available: torch.Tensor,
                smooth: float = 1e-5) -> torch.Tensor:
    """1 - soft Dice per (sample, class) over annotated voxels, averaged over available pairs."""
    weight = _weights(logits, frame_mask, available)
    dims = tuple(range(2, logits.ndim))
    probs = torch.sigmoid(logits) * weight
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + (target * weight).sum(dims)
    dice = 1 - (2 * intersection + smooth) / (denominator + smooth)
    valid = available * (frame_mask.sum(dims) > 0).float()
    return (dice * valid).sum() / valid.sum().clamp_min(1.0)


def masked_bce_dice(logits, target, frame_mask, available) -> torch.Tensor:
    return masked_bce(logits, target, frame_mask, available) + masked_dice(logits, target, frame_mask, available)


SEG_LOSS_FUNCTIONS = {"bce": masked_bce, "bce_dice": masked_bce_dice}


def resized_like(volume: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resampling of targets / masks to the score maps' (reduced) resolution."""
    if volume.shape[2:] == like.shape[2:]:
        return volume
    return F.interpolate(volume, size=like.shape[2:], mode="nearest")


class EchoPromptTrainer(PluginTrainerDefaults, ConditionSensitivityLogging, SafeCheckpoints, nnUNetTrainer):
    """Trains EchoPromptNetwork on an echo collection (nnUNetv2_universal_build_echo_collection)."""

    network_overrides: dict = {}  # architecture kwargs a variant changes (ablations)
    loss_mode = "safe"
    seg_loss = "bce"  # the paper's L_BCE; "bce_dice" adds a masked soft Dice
    pixel_text_weight = 1.0  # lambda1 (= lambda2 in the paper)
    segmentation_weight = 1.0  # lambda2
    prompt_weight = 1.0  # w_pr of the "safe" form: the matching loss trains only the keys (docs: echo-model.md)
    score_temperature = 0.07  # DenseCLIP's tau for the pixel-text logits
    augmentation = "paper"  # left-right flip, rotation, shear; "nnunet": nnU-Net's pipeline without mirroring
    rotation_degrees = 30.0  # the paper's +-30 degrees
    shear_range = (-0.2, 0.2)  # in-plane shear factor (the paper gives no range)
    augmentation_probability = 0.5  # per clip, for rotation and shear (the paper gives none); flip: 0.5 per clip
    epoch_is_one_pass = True  # iterations per epoch = ceil(training clips / batch), as the paper's epochs
    validation_batches: Optional[int] = 50  # per-epoch validation on a fixed subset of 50 x batch clips (nnU-Net's
    # 50 validation batches); None: every validation clip each epoch
    text_pooling = "mean"  # mean of the prompt's token states (keeps the class words; [CLS] is near-parallel)
    text_relative_to_template = True  # minus the bare template's embedding: what each class's words add
    query_batch_size = 16
    # The view prompts may legitimately change little (the model is meant to be view-agnostic): the condition
    # sensitivity is logged for information, without the "ignores its prompt" warning.
    condition_warning_threshold = 0.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for name, allowed in (("loss_mode", LOSS_MODES), ("seg_loss", SEG_LOSSES), ("augmentation", AUGMENTATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.metadata = EchoMetadata(dataset_json)
        self.initial_lr = 1e-4
        self.weight_decay = 0.0
        self.num_epochs = 100
        self.enable_deep_supervision = False
        self.query_cache: Optional[QueryCache] = None
        self._iteration_in_epoch = 0
        self.logger.local_logger = TaskAwareLocalLogger([])  # + the condition diagnostic (over views)

    # ---- network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> nn.Module:
        name = configuration_manager.network_arch_class_name
        if not name.endswith(".EchoPromptNetwork"):
            raise ValueError(f"plans {plans_manager.plans_name!r} describe {name}, not the echo network; plan the echo "
                             f"collection with nnUNetv2_universal_plan_echo")
        kwargs = {**configuration_manager.network_arch_init_kwargs, **cls.network_overrides}
        network = get_network_from_plans(name, kwargs, configuration_manager.network_arch_init_kwargs_req_import,
                                         num_input_channels, num_output_channels, allow_init=True,
                                         deep_supervision=False)
        # SAM is loaded from the user's local checkpoint only when a forward pass has no cached query (prediction).
        network.query_encoder_loader = partial(load_sam_query_encoder, None, network.query_image_size)
        return network

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # the dynamic heads exist at full resolution only

    def _do_i_compile(self):
        return os.environ.get("nnUNet_compile", "f").lower() in ("t", "true", "1") and super()._do_i_compile()

    def configure_optimizers(self):
        params = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = MADGRAD(params, lr=self.initial_lr, momentum=0.9, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # No mirroring at prediction and no flip in time (frame 0 must stay ED); in-plane rotation only. The
        # paper's left-right flip is part of the training pipeline (get_training_transforms).
        patch_size = self.configuration_manager.patch_size
        angle = self.rotation_degrees / 180.0 * np.pi
        rotation = (-angle, angle)
        dummy_2d = len(patch_size) == 3
        initial = list(get_patch_size(patch_size[1:], rotation, rotation, rotation, (0.85, 1.25)))
        initial_patch_size = (patch_size[0], *initial)
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None

    # ---- data: whole clips in time (frame 0 = ED for the query), whole-frame annotation masks
    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        labels = dict(foreground_labels=self.label_manager.foreground_labels,
                      regions=self.label_manager.foreground_regions, ignore_label=self.label_manager.ignore_label)
        if self.augmentation == "paper":
            tr_transforms = paper_training_transforms(
                patch_size, rotation, self.shear_range, self.augmentation_probability, self.augmentation_probability,
                flip_axis=len(patch_size) - 1, regions=labels["regions"], ignore_label=labels["ignore_label"])
        else:
            tr_transforms = self.get_training_transforms(
                patch_size, rotation, None, mirror_axes, dummy_2d,
                use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False, **labels)
        val_transforms = self.get_validation_transforms(None, is_cascaded=False, **labels)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        dataset_val = self.validation_subset(dataset_val)
        if self.epoch_is_one_pass:  # an epoch = one pass over the clips (global batch across DDP ranks)
            global_batch = self.configuration_manager.batch_size
            self.num_iterations_per_epoch = epoch_iterations(len(dataset_tr.identifiers), global_batch)
            self.num_val_iterations_per_epoch = epoch_iterations(len(dataset_val.identifiers), global_batch)
            self.print_to_log_file(f"one epoch = one pass: {self.num_iterations_per_epoch} training iterations "
                                   f"({len(dataset_tr.identifiers)} clips, batch {global_batch})")
        common = dict(label_manager=self.label_manager, oversample_foreground_percent=
                      self.oversample_foreground_percent, probabilistic_oversampling=self.probabilistic_oversampling)
        dl_tr = WholeClipDataLoader(dataset_tr, self.batch_size, initial_patch_size, patch_size,
                                    transforms=tr_transforms, **common)
        dl_val = WholeClipDataLoader(dataset_val, self.batch_size, patch_size, patch_size, transforms=val_transforms,
                                     **common)
        return wrap_in_augmenters(dl_tr, dl_val, self.device)

    def validation_subset(self, dataset_val):
        """The clips validated during training: a fixed, seeded subset of at most `validation_batches` x batch
        clips. With fold `all` (the paper's command) the validation clips are all ~15,800 training clips, and a
        one-pass validation epoch (each batch also run under the other views' prompts for the diagnostic) cost about
        as much as the training epoch."""
        if self.validation_batches is None:
            return dataset_val
        limit = self.validation_batches * self.configuration_manager.batch_size
        clips = sorted(dataset_val.identifiers)
        if len(clips) <= limit:
            return dataset_val
        chosen = sorted(np.random.RandomState(12345).choice(clips, limit, replace=False).tolist())
        self.print_to_log_file(f"validation during training on a fixed subset of {limit} of the {len(clips)} "
                               f"validation clips ({self.validation_batches} batches)")
        return self.dataset_class(self.preprocessed_dataset_folder, chosen,
                                  folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)

    # ---- one-off preparation: class embeddings and the SAM query cache
    def on_train_start(self):
        super().on_train_start()
        self._prepare_class_embeddings()
        self._prepare_query_cache()

    def _prepare_class_embeddings(self) -> None:
        network = self._plain_network()
        if network.text_mode != "clinicalbert" or bool(network.class_embeddings_ready):
            return  # one-hot codes, or loaded from a checkpoint
        embeddings = class_text_embeddings(self.metadata.class_texts, pooling=self.text_pooling,
                                           relative_to_template=self.text_relative_to_template)
        if embeddings.shape != network.class_embeddings.shape:
            raise ValueError(f"the text encoder gives embeddings of shape {tuple(embeddings.shape)}; the plans' "
                             f"text_dim expects {tuple(network.class_embeddings.shape)}")
        network.class_embeddings.copy_(embeddings.to(network.class_embeddings.device))
        network.class_embeddings_ready.fill_(True)
        self.print_to_log_file(f"class embeddings from the text encoder for {self.metadata.class_texts}")

    def _prepare_query_cache(self) -> None:
        network = self._plain_network()
        encoder = network.query_encoder_loader()
        cache = QueryCache(join(self.preprocessed_dataset_folder_base, "echo_queries"), encoder.checkpoint_id)
        dataset = self.dataset_class(self.preprocessed_dataset_folder)
        missing = cache.missing(dataset.identifiers)
        if missing and self.local_rank == 0:
            self.print_to_log_file(f"computing the SAM query of {len(missing)} case(s) (once; cached)")
            encoder.to(self.device)
            for start in range(0, len(missing), self.query_batch_size):
                keys = missing[start:start + self.query_batch_size]
                frames = torch.stack([torch.from_numpy(np.asarray(dataset.load_case(k)[0][0, 0], np.float32))
                                      for k in keys])
                with torch.no_grad():
                    out = encoder(sam_input(frames.to(self.device), network.query_image_size))
                cache.update(dict(zip(keys, out.mean(dim=(2, 3)))))
            cache.save()
        if self.is_ddp:
            dist.barrier()
            cache = QueryCache(join(self.preprocessed_dataset_folder_base, "echo_queries"), encoder.checkpoint_id)
        if cache.stack(dataset.identifiers[:1]).shape[1] != network.prompt_pool.keys.shape[1]:
            raise ValueError(f"the SAM encoder gives queries of size {cache.stack(dataset.identifiers[:1]).shape[1]}; "
                             f"the plans' query_dim is {network.prompt_pool.keys.shape[1]}")
        self.query_cache = cache
        del encoder

    # ---- steps
    def _batch_inputs(self, batch: dict):
        keys = list(batch["keys"])
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = (target[0] if isinstance(target, list) else target).to(self.device, non_blocking=True).float()
        # A frame is annotated iff no voxel of it carries the ignore label (augmentation pads with background).
        spatial = tuple(range(3, target.ndim))
        frame_mask = (target[:, -1:].sum(spatial, keepdim=True) == 0).float().expand_as(target[:, -1:])
        query = self.query_cache.stack(keys).to(self.device)
        views = torch.tensor(self.metadata.view_indices(keys), device=self.device)
        available = torch.tensor(self.metadata.availability(keys), device=self.device, dtype=torch.float32)
        return data, target[:, :-1], frame_mask, query, views, available

    def training_progress(self) -> float:
        """t / t_max over training iterations (the ramp advances every iteration, not every epoch)."""
        total = self.num_epochs * self.num_iterations_per_epoch
        done = self.current_epoch * self.num_iterations_per_epoch + self._iteration_in_epoch
        return min(1.0, done / max(1, total - 1))

    def compute_loss(self, logits, aux, target, frame_mask, available) -> torch.Tensor:
        bce = SEG_LOSS_FUNCTIONS[self.seg_loss](logits, target, frame_mask, available)
        pixel_text = logits.new_zeros(())
        scores = aux["scores"]
        if scores is not None:  # at the score maps' own (reduced) resolution
            pixel_text = masked_bce(scores / self.score_temperature, resized_like(target, scores),
                                    resized_like(frame_mask, scores), available)
        segmentation = self.pixel_text_weight * pixel_text + self.segmentation_weight * bce
        matching = aux["selection"].matching.mean()
        lam = ramp(self.training_progress())
        if self.loss_mode == "paper":
            total = (1 - lam) * segmentation - lam * matching
        else:
            total = segmentation - lam * self.prompt_weight * matching
        self._last_loss_parts = {k: float(v.detach()) for k, v in
                                 dict(seg=segmentation, bce=bce, pix=pixel_text, pr=matching).items()}
        self._last_loss_parts["lambda"] = lam
        return total

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._iteration_in_epoch = 0

    def train_step(self, batch: dict) -> dict:
        data, target, frame_mask, query, views, available = self._batch_inputs(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            logits, aux = self._forward(data, query, views)
            loss = self.compute_loss(logits, aux, target, frame_mask, available)
        backward_and_step(self, loss)
        self._iteration_in_epoch += 1
        return {"loss": loss.detach().cpu().numpy()}

    def _forward(self, data, query, views):
        if self.is_ddp:  # DDP hooks run on forward(): route forward_with_aux through it
            return self.network(data, query=query, views=views, with_aux=True)
        return self._plain_network().forward_with_aux(data, query=query, views=views)

    def validation_step(self, batch: dict) -> dict:
        data, target, frame_mask, query, views, available = self._batch_inputs(batch)
        with torch.no_grad(), (autocast(self.device.type, enabled=True) if self.device.type == "cuda"
                                else dummy_context()):
            # eval mode: prompts are selected by similarity only (no view id), as at prediction
            logits, aux = self._plain_network().forward_with_aux(data, query=query)
            loss = self.compute_loss(logits, aux, target, frame_mask, available)
        predicted = (torch.sigmoid(logits.float()) > 0.5).float()
        mask = frame_mask * available.reshape(*available.shape, *[1] * (logits.ndim - 2))
        axes = [0] + list(range(2, logits.ndim))
        tp, fp, fn = ((predicted * target * mask).sum(axes), (predicted * (1 - target) * mask).sum(axes),
                      ((1 - predicted) * target * mask).sum(axes))
        network = self._plain_network()
        self._record_other_views(data, query, views, logits)
        voted = aux["selection"].voted_group(network.prompt_pool.per_group, network.num_views)
        return {"loss": loss.detach().cpu().numpy(), "tp_hard": tp.cpu().numpy(), "fp_hard": fp.cpu().numpy(),
                "fn_hard": fn.cpu().numpy(), "view_correct": int((voted == views).sum()), "view_total": len(views)}

    @torch.no_grad()
    def _record_other_views(self, data, query, views, logits) -> None:
        """Condition diagnostic: the foreground predicted as at prediction (prompts chosen by the query) against
        the foreground with every other view's prompts forced; pairs are (the clip's view, the forced view)."""
        network = self._plain_network()
        if network.prompt_selection != "pool":
            return
        own_fg = (logits > 0).any(1)
        for other in range(len(self.metadata.views)):
            picked = views != other
            if not picked.any():
                continue
            forced = torch.full_like(views, other)
            with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
                other_logits, _ = network.forward_with_aux(data[picked], query=query[picked], views=forced[picked],
                                                           force_views=True)
            for view in views[picked].unique().tolist():
                rows = views[picked] == view
                self.record_condition_overlap(view, other, own_fg[picked][rows], (other_logits[rows] > 0).any(1))

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        correct = sum(o.pop("view_correct") for o in val_outputs)
        total = sum(o.pop("view_total") for o in val_outputs)
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (correct, total))
            correct, total = sum(g[0] for g in gathered), sum(g[1] for g in gathered)
        super().on_validation_epoch_end(val_outputs)
        self.logger.log(TASK_DICE_KEY, {}, self.current_epoch)
        self.log_condition_sensitivity(self.metadata.views)
        self.view_accuracy = correct / max(1, total)
        self.print_to_log_file(f"view accuracy of the selected prompt keys: {self.view_accuracy:.3f} "
                               f"({correct}/{total}); loss parts {getattr(self, '_last_loss_parts', {})}")
