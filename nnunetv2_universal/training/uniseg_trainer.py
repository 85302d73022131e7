"""UniSegTrainer: nnU-Net's trainer for a collection, with task-balanced single-task batches, task-conditioned
forward passes and losses on logits cut to each task's classes (paper defaults: 50 batches per task per epoch,
SGD 0.01 nesterov 0.99, DC+CE with deep supervision, 1000 epochs)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import autocast, nn
from torch import distributed as dist

from nnunetv2_universal.collection.sampling import TaskBalancedDataLoader
from nnunetv2_universal.collection.task_plans import TASKS_KEY
from nnunetv2_universal.inference.predictor import UniversalPredictor
from nnunetv2_universal.inference.stock_predict import apply_task_from_environment, plugin_predictor_builds
from nnunetv2_universal.registry import TaskRegistry
from nnunetv2_universal.training.augmenters import wrap_in_augmenters
from nnunetv2_universal.training.task_logging import TASK_DICE_KEY, TaskAwareLocalLogger
from nnunetv2_universal.training.checkpointing import SafeCheckpoints
from nnunetv2_universal.training.condition_diagnostic import ConditionSensitivityLogging
from nnunetv2_universal.training.trainer_defaults import PluginTrainerDefaults, nnunet_workers


class TaskSlicedLoss(nn.Module):
    """Applies a loss to logits cut to the current task's classes (set `num_classes` per batch), so channels
    beyond a task's classes get no gradient from its batches. Works on a tensor or a deep-supervision list.

    A batch that mixes tasks sets `sample_groups` instead: [(sample indices, num_classes), ...], one entry per task;
    each task's samples get the loss on their own classes, weighted by their share of the batch."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss
        self.num_classes = None
        self.sample_groups = None

    def forward(self, output, target):
        if self.sample_groups is not None:
            size = (output[0] if isinstance(output, (list, tuple)) else output).shape[0]
            return sum(len(samples) / size * self._sliced(_select(output, samples), _select(target, samples), n)
                       for samples, n in self.sample_groups)
        if self.num_classes is None:
            raise RuntimeError("TaskSlicedLoss.num_classes must be set for each batch")
        return self._sliced(output, target, self.num_classes)

    def _sliced(self, output, target, num_classes: int):
        if isinstance(output, (list, tuple)):
            return self.loss([o[:, :num_classes] for o in output], target)
        return self.loss(output[:, :num_classes], target)


def _select(x, samples: List[int]):
    """Samples of a batch tensor, or of every deep-supervision level."""
    if isinstance(x, (list, tuple)):
        return [level[samples] for level in x]
    return x[samples]


class ScaledPolyLRScheduler(PolyLRScheduler):
    """nnU-Net's poly schedule, times each parameter group's `lr_scale`."""

    def step(self, current_step=None):
        super().step(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class UniSegTrainer(PluginTrainerDefaults, ConditionSensitivityLogging, SafeCheckpoints, nnUNetTrainer):
    """Trains a UniSeg network on a collection built by nnUNetv2_universal_build_collection."""

    network_class_name = None  # None: the class named in the plans (UniSegNetwork); variants may swap it
    plans_network_suffixes = (".UniSegNetwork",)  # network classes the plans may name
    batches_per_task_per_epoch = 50  # the reference's round: 50 batches of every task per epoch

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.registry = TaskRegistry.from_dataset_json(dataset_json)
        self.num_iterations_per_epoch = self.batches_per_task_per_epoch * len(self.registry)
        self.num_val_iterations_per_epoch = 50
        self.logger.local_logger = TaskAwareLocalLogger(self.registry.names)

    @classmethod
    def check_before_start(cls, plans: dict, configuration: str, dataset_json: dict) -> None:
        super().check_before_start(plans, configuration, dataset_json)
        TaskRegistry.from_dataset_json(dataset_json)  # a collection, with its registry
        name = PlansManager(plans).get_configuration(configuration).network_arch_class_name
        cls.check_network_class(name, plans.get("plans_name"))

    @classmethod
    def check_network_class(cls, name: str, plans_name: str) -> None:
        if not name.endswith(cls.plans_network_suffixes):
            raise ValueError(f"plans {plans_name!r} describe {name}, not one of {list(cls.plans_network_suffixes)}; "
                             f"plan the collection with nnUNetv2_universal_plan_and_preprocess and the matching "
                             f"template")

    # ---- network
    network_overrides: dict = {}  # architecture kwargs a variant changes (see training/variants/uniseg_ablations.py)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision: bool = True) -> nn.Module:
        # A classmethod (called like nnU-Net's static one) so that variants only set class attributes.
        name = configuration_manager.network_arch_class_name
        cls.check_network_class(name, plans_manager.plans_name)
        return cls.network_for_plans(cls.network_class_name or name, cls.network_kwargs(configuration_manager),
                                     plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                     enable_deep_supervision)

    @classmethod
    def network_kwargs(cls, configuration_manager) -> dict:
        """The network's keyword arguments: the plans' architecture, then the variant's overrides."""
        return {**configuration_manager.network_arch_init_kwargs, **cls.all_network_overrides()}

    @classmethod
    def all_network_overrides(cls) -> dict:
        """The `network_overrides` of every class from the base up: a mixin's overrides combine with those of the
        trainer it is mixed into (training/variants/m4oe_variants.py)."""
        overrides = {}
        for klass in reversed(cls.__mro__):
            overrides.update(vars(klass).get("network_overrides", {}))
        return overrides

    @staticmethod
    def network_for_plans(class_name: str, kwargs: dict, plans_manager, configuration_manager, num_input_channels,
                          num_output_channels, enable_deep_supervision: bool) -> nn.Module:
        """The network of `class_name` with `kwargs`; built for nnU-Net's predictor (no deep supervision) it honours
        $nnUNet_universal_task (stock nnUNetv2_predict)."""
        network = get_network_from_plans(class_name, kwargs, configuration_manager.network_arch_init_kwargs_req_import,
                                         num_input_channels, num_output_channels, allow_init=True,
                                         deep_supervision=enable_deep_supervision)
        if not enable_deep_supervision:
            apply_task_from_environment(network, plans_manager, configuration_manager)
        return network

    def initialize(self):
        with plugin_predictor_builds():  # the trainer sets each batch's task; $nnUNet_universal_task plays no part
            super().initialize()

    def _do_i_compile(self):
        # Task and stem dispatch re-specialise compiled graphs; compile only when explicitly asked for.
        return os.environ.get("nnUNet_compile", "f").lower() in ("t", "true", "1") and super()._do_i_compile()

    supervise_lowest_head = False  # the paper (nnU-Net): the lowest-resolution head has deep-supervision weight 0

    def _build_loss(self):
        loss = super()._build_loss()
        if self.supervise_lowest_head and self.enable_deep_supervision:
            n = len(loss.weight_factors)
            weights = np.array([1 / 2 ** i for i in range(n)])
            loss.weight_factors = tuple(weights / weights.sum())
        return TaskSlicedLoss(loss)

    # ---- optimiser: the paper's SGD; conditioning modules may get a larger learning rate
    condition_lr_multiplier = 1.0  # the paper: one learning rate for every parameter
    condition_parameter_prefixes = ("prompt", "fuse.", "film.", "controller.")

    def configure_optimizers(self):
        if self.condition_lr_multiplier == 1.0:
            return super().configure_optimizers()
        named = list(self._plain_network().named_parameters())
        conditioning = [p for n, p in named if n.startswith(self.condition_parameter_prefixes)]
        ids = {id(p) for p in conditioning}
        groups = [{"params": [p for _, p in named if id(p) not in ids], "lr_scale": 1.0},
                  {"params": conditioning, "lr_scale": self.condition_lr_multiplier}]
        optimizer = torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                    nesterov=True)
        return optimizer, ScaledPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _condition_batch(self, keys) -> int:
        """Set the network's condition and the loss's class count for this (single-task) batch."""
        task = self.registry.task_of_batch(keys)
        self._plain_network().condition = self.registry.condition(task)
        self.loss.num_classes = self.registry.num_classes(task)
        return task

    # ---- data
    mix_tasks_in_batch = False  # UniSeg: one task per batch; True: a batch may mix compatible tasks (task heads)

    def task_sampling_weights(self, training_cases) -> Optional[Dict[int, float]]:
        """None: task-balanced rounds (the paper); trainers that sample tasks by weight return {task: weight}."""
        return None

    def get_dataloaders(self):
        if self.dataset_class is None:
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        ds_scales = self._get_deep_supervision_scales()
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        common = dict(is_cascaded=False, foreground_labels=self.label_manager.foreground_labels, regions=None,
                      ignore_label=None)
        # augmentation masks the outside of the nonzero region in the channels that were normalised inside it:
        # each task's own flags (the configuration's are the first member's)
        settings = self.configuration_manager.configuration.get(TASKS_KEY, {})
        task_masks = {t: tuple(settings.get(name, {}).get("use_mask_for_norm",
                                                          self.configuration_manager.use_mask_for_norm))
                      for t, name in enumerate(self.registry.names)}
        by_mask = {m: self.get_training_transforms(patch_size, rotation, ds_scales, mirror_axes, dummy_2d,
                                                   use_mask_for_norm=list(m), **common)
                   for m in sorted(set(task_masks.values()))}
        tr_transforms = {t: by_mask[m] for t, m in task_masks.items()}
        val_transforms = self.get_validation_transforms(ds_scales, **common)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        case_tasks = {k: self.registry.task_of_case(k) for k in self.registry.cases}
        loader_kwargs = dict(label_manager=self.label_manager, oversample_foreground_percent=
                             self.oversample_foreground_percent, probabilistic_oversampling=
                             self.probabilistic_oversampling, case_tasks=case_tasks,
                             batches_per_task=self.batches_per_task_per_epoch, rank=self.local_rank,
                             task_weights=self.task_sampling_weights(dataset_tr.identifiers))
        # tasks whose images share channels and augmentation may share a batch
        groups = {}
        for t, m in task_masks.items():
            groups.setdefault((self.registry.tasks[t].num_channels, m), []).append(t)
        dl_tr = TaskBalancedDataLoader(dataset_tr, self.batch_size, initial_patch_size, patch_size,
                                       transforms=tr_transforms, task_groups=list(groups.values())
                                       if self.mix_tasks_in_batch else None, **loader_kwargs)
        dl_val = TaskBalancedDataLoader(dataset_val, self.batch_size, patch_size, patch_size,
                                        transforms=val_transforms, seed=54321, **loader_kwargs)
        return wrap_in_augmenters(dl_tr, dl_val, self.device)

    # ---- steps
    def train_step(self, batch: dict) -> dict:
        self._condition_batch(batch["keys"])
        return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        task = self._condition_batch(batch["keys"])
        n = self.loss.num_classes
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) else \
            target.to(self.device, non_blocking=True)
        others = [o for o in self.registry.tasks_for_channels(data.shape[1]) if o != task]
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss = self.loss(output, target)
            other_outputs = self._outputs_under(data, others)
        if self.enable_deep_supervision:
            output, target = output[0], target[0]
        output = output[:, :n]
        own_fg = output.argmax(1) > 0
        for o, out in zip(others, other_outputs):
            out = out[0] if isinstance(out, (list, tuple)) else out
            self.record_condition_overlap(task, o, own_fg, out[:, :self.registry.num_classes(o)].argmax(1) > 0)
        onehot = torch.zeros_like(output, dtype=torch.float16).scatter_(1, output.argmax(1, keepdim=True), 1)
        tp, fp, fn, _ = get_tp_fp_fn_tn(onehot, target, axes=[0] + list(range(2, output.ndim)))
        return {"loss": loss.detach().cpu().numpy(), "task": task, "tp_hard": tp[1:].detach().cpu().numpy(),
                "fp_hard": fp[1:].detach().cpu().numpy(), "fn_hard": fn[1:].detach().cpu().numpy()}

    @torch.no_grad()
    def _outputs_under(self, data: torch.Tensor, tasks: List[int]) -> list:
        """The network's outputs for `data` under other tasks (the condition diagnostic); one encoder pass where
        the network shares it."""
        if not tasks:
            return []
        network = self._plain_network()
        conditions = [self.registry.condition(t) for t in tasks]
        if hasattr(network, "forward_tasks"):
            return network.forward_tasks(data, conditions)
        return [network(data, c) for c in conditions]

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        # Class counts differ per task: accumulate per task instead of summing ragged arrays.
        stats = {}
        for o in val_outputs:
            acc = stats.setdefault(o["task"], [0, 0, 0])
            for i, key in enumerate(("tp_hard", "fp_hard", "fn_hard")):
                acc[i] = acc[i] + o[key]
        losses = [o["loss"] for o in val_outputs]
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (stats, losses))
            stats, losses = {}, []
            for rank_stats, rank_losses in gathered:
                losses += rank_losses
                for t, s in rank_stats.items():
                    acc = stats.setdefault(t, [0, 0, 0])
                    stats[t] = [a + b for a, b in zip(acc, s)]
        per_task, per_class = {}, []
        for t in sorted(stats):
            tp, fp, fn = stats[t]
            dice = [float(2 * a / (2 * a + b + c)) if (2 * a + b + c) > 0 else float("nan")
                    for a, b, c in zip(tp, fp, fn)]
            per_class += dice
            per_task[self.registry.names[t]] = float(np.nanmean(dice)) if not np.all(np.isnan(dice)) else float("nan")
        mean_dice = float(np.nanmean(list(per_task.values()))) if per_task else float("nan")
        self.logger.log("mean_fg_dice", mean_dice, self.current_epoch)
        self.logger.log("dice_per_class_or_region", per_class, self.current_epoch)
        self.logger.log("val_losses", float(np.mean(losses)), self.current_epoch)
        self.logger.log(TASK_DICE_KEY, per_task, self.current_epoch)
        self.log_condition_sensitivity(self.registry.names)

    def on_epoch_end(self):
        per_task = self.logger.get_value(TASK_DICE_KEY, step=-1)
        self.print_to_log_file("Pseudo dice per task", {k: round(v, 4) for k, v in per_task.items()})
        super().on_epoch_end()

    # ---- final validation: each case with its task's preprocessing, condition and labels
    def perform_actual_validation(self, save_probabilities: bool = False):
        workers = self.announce_final_validation()
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        predictor = UniversalPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                       perform_everything_on_device=True, device=self.device, verbose=False,
                                       verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(self._plain_network(), self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__,
                                        self.inference_allowed_mirroring_axes)
        validation_folder = join(self.output_folder, "validation")
        _, val_keys = self.do_split()
        if self.is_ddp:
            val_keys = val_keys[self.local_rank::dist.get_world_size()]
        dataset_val = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        for k in dataset_val.identifiers:
            view = predictor.select_task(self.registry.task_of_case(k))
            data, _, _, properties = dataset_val.load_case(k)
            self.print_to_log_file(f"predicting {k} (task {view.spec.name})")
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data[:])).cpu()
            out_folder = join(validation_folder, view.spec.name)
            maybe_mkdir_p(out_folder)
            export_prediction_from_logits(logits, properties, view.configuration_manager, view.plans_manager,
                                          view.dataset_json, join(out_folder, k), save_probabilities)
        if self.is_ddp:
            dist.barrier()
        if self.local_rank == 0:
            with nnunet_workers(workers):
                summary = self._summarise_validation(predictor, validation_folder, val_keys, workers)
            save_json(summary, join(validation_folder, "summary_per_task.json"), sort_keys=False)
        self.set_deep_supervision_enabled(True)
        compute_gaussian.cache_clear()

    def _summarise_validation(self, predictor: UniversalPredictor, validation_folder: str, val_keys,
                              workers: int = 1) -> dict:
        summary = {}
        tasks_with_cases = sorted({self.registry.task_of_case(k) for k in val_keys})
        for t in tasks_with_cases:
            view = predictor.view(t)
            folder = join(validation_folder, view.spec.name)
            metrics = compute_metrics_on_folder(join(self.preprocessed_dataset_folder_base, "gt_segmentations"),
                                                folder, join(folder, "summary.json"),
                                                view.plans_manager.image_reader_writer_class(),
                                                self.dataset_json["file_ending"], view.label_manager.foreground_labels,
                                                None, chill=True, num_processes=workers)
            dice = {name: metrics["mean"][value]["Dice"] for name, value in view.spec.foreground_labels.items()}
            summary[view.spec.name] = {"per_class_dice": dice, "mean_dice": metrics["foreground_mean"]["Dice"]}
            self.logger.log_summary(f"final_val/{view.spec.name}_dice", metrics["foreground_mean"]["Dice"])
            self.print_to_log_file(f"Validation Dice {view.spec.name}: {metrics['foreground_mean']['Dice']:.4f} "
                                   f"{ {k: round(v, 4) for k, v in dice.items()} }", also_print_to_console=True)
        mean = float(np.mean([s["mean_dice"] for s in summary.values()])) if summary else float("nan")
        self.print_to_log_file(f"Mean validation Dice over tasks: {mean:.4f}", also_print_to_console=True)
        return {"tasks": summary, "mean_dice_over_tasks": mean}
