"""Task-conditioned prediction through nnU-Net's own predictor (sliding window, Gaussian weighting, mirroring TTA,
resampling and export).

`UniversalPredictor.select_task(name)` switches the predictor to one task: that task's preprocessing (spacing,
normalisation), its condition and its task-local labels; every stock `nnUNetPredictor` method then works as usual.
`predict_all_tasks` runs every task compatible with an image: tasks that share preprocessing share one encoder pass
per tile (only the prompt-dependent part runs per task), and the per-task label maps are merged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference import predict_from_raw_data
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from torch import nn

from nnunetv2_universal.collection.task_plans import TaskView
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.inference.merge import GlobalLabels, merge_task_segmentations
from nnunetv2_universal.inference.progress import CaseProgress, announce, mirror_passes, tile_count
from nnunetv2_universal.inference.stock_predict import plugin_predictor_builds
from nnunetv2_universal.orientation import segmentation_in_input_order
from nnunetv2_universal.registry import TaskRegistry


# An image whose minimum is below this is in Hounsfield units (air is -1000 HU; scanners fill with -1024 or less);
# MR and PET intensities are not negative.
CT_MINIMUM_HU = -500.0


class TaskSlicedLogits(nn.Module):
    """Wraps a conditioned network: returns, for each condition, the logits cut to that task's classes,
    concatenated along channels. Networks with `forward_tasks` run their shared part once."""

    def __init__(self, network: nn.Module, conditions: Sequence[Condition], num_classes: Sequence[int]):
        super().__init__()
        self.network = network
        self.conditions = list(conditions)
        self.num_classes = list(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.network, "forward_tasks"):
            outputs = self.network.forward_tasks(x, self.conditions)
        else:
            outputs = [self.network(x, c) for c in self.conditions]
        return torch.cat([restrict_to_labels(o[:, :n], c.labels) for o, n, c in
                          zip(outputs, self.num_classes, self.conditions)], 1)


def restrict_to_labels(logits: torch.Tensor, labels) -> torch.Tensor:
    """Push the foreground channels not in `labels` below every other channel (they are never the argmax)."""
    if not labels:
        return logits
    hidden = [c for c in range(1, logits.shape[1]) if c not in set(labels)]
    if not hidden:
        return logits
    out = logits.clone()
    out[:, hidden] = logits.amin(1, keepdim=True) - 30.0
    return out


GPU_DONE_LINE = "GPU prediction completed."


def tile_mirrorings(slicers, mirror_axes) -> List[tuple]:
    """One mirroring per tile, for one network pass per tile: along each mirroring axis a tile is flipped where its
    step index on that axis is odd, so neighbouring tiles are mirrored differently and the overlaps average
    different mirrorings (in 3D with nnU-Net's step 0.5 most voxels see several; where 8 tiles overlap, all 8).
    Returns the flipped dimensions of the network input (batch, channel first) per slicer."""
    spatial = [[i for i, s in enumerate(sl) if isinstance(s, slice)][1:] for sl in slicers]  # skip the channel
    starts = [sorted({sl[d].start for sl in slicers}) for d in spatial[0]] if slicers else []
    flips = []
    for sl, dims in zip(slicers, spatial):
        steps = [starts[k].index(sl[d].start) for k, d in enumerate(dims)]
        flips.append(tuple(a + 2 for a in sorted(mirror_axes or ()) if steps[a] % 2))
    return flips


class _LinesDropped(io.TextIOBase):
    """stdout that drops lines starting with `prefix` (print writes a line's text and its newline separately)."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.dropping = stream, prefix, False

    def write(self, text: str) -> int:
        if text.startswith(self.prefix):
            self.dropping = not text.endswith("\n")
            return len(text)
        if self.dropping and text == "\n":
            self.dropping = False
            return len(text)
        self.dropping = False
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


@contextlib.contextmanager
def stdout_without(prefix: str):
    saved = sys.stdout
    sys.stdout = _LinesDropped(saved, prefix)
    try:
        yield
    finally:
        sys.stdout = saved


def _plugin_trainer_class(name: str):
    """One of our trainers by name (the module nnUNet_extTrainer points at re-exports all of them), or None."""
    from nnunetv2_universal.nnunet_trainers import nnunetv2_universal_uniseg as trainers
    found = getattr(trainers, name, None)
    return found if isinstance(found, type) else None


@contextlib.contextmanager
def plugin_trainers_found_first():
    """nnU-Net's trainer search reports 'Trainer ... not found in nnunetv2.training.nnUNetTrainer' before it looks
    in nnUNet_extTrainer; our predictor knows our trainers and asks nnU-Net only for the others."""
    saved = predict_from_raw_data.recursive_find_trainer_class_by_name

    def find(name: str):
        return _plugin_trainer_class(name) or saved(name)

    predict_from_raw_data.recursive_find_trainer_class_by_name = find
    try:
        yield
    finally:
        predict_from_raw_data.recursive_find_trainer_class_by_name = saved


def _head_count_label_manager(num_heads: int) -> LabelManager:
    return LabelManager({"background": 0, **{f"c{i}": i for i in range(1, num_heads)}}, None)


class UniversalPredictor(nnUNetPredictor):
    """nnUNetPredictor for models trained on a collection (registry in the model's dataset.json)."""

    configuration_name = "3d_fullres"
    reorient = True  # bring inputs to each task's training orientation (nnunetv2_universal.orientation)
    cpu_bf16 = False  # bfloat16 autocast on the CPU (nnU-Net autocasts on CUDA only); --cpu_bf16 / --fast
    antialias = False  # anti-aliased downsampling of the input images (collection/resampling.py); --antialias
    tile_mirroring = False  # without test-time mirroring: one mirroring per tile, alternating (tile_mirrorings)
    _tile_flips = iter(())  # the running sliding window's remaining tile mirrorings
    _case_progress: Optional[CaseProgress] = None  # the running case's bar (--all-tasks: across task groups)

    def _remember_collection(self):
        self.registry = TaskRegistry.from_dataset_json(self.dataset_json)
        self.collection_plans = self.plans_manager.plans
        self.collection_dataset_json = self.dataset_json
        self.views: Dict[int, TaskView] = {}
        self.active: List[TaskView] = []

    def initialize_from_trained_model_folder(self, model_training_output_dir, use_folds,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        with plugin_predictor_builds(), plugin_trainers_found_first():
            super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        self.configuration_name = self._configuration_name_of(self.configuration_manager)
        self._remember_collection()

    def manual_initialization(self, network, plans_manager, configuration_manager, parameters, dataset_json,
                              trainer_name, inference_allowed_mirroring_axes):
        super().manual_initialization(network, plans_manager, configuration_manager, parameters, dataset_json,
                                      trainer_name, inference_allowed_mirroring_axes)
        self.configuration_name = self._configuration_name_of(configuration_manager)
        self._remember_collection()

    def predict_from_data_iterator(self, *args, **kwargs):
        if self.device.type == "cuda":
            return super().predict_from_data_iterator(*args, **kwargs)
        with stdout_without(GPU_DONE_LINE):  # nnU-Net says this on every device
            return super().predict_from_data_iterator(*args, **kwargs)

    def _configuration_name_of(self, configuration_manager) -> str:
        for name, cfg in self.plans_manager.plans["configurations"].items():
            if cfg.get("data_identifier") == configuration_manager.data_identifier:
                return name
        return self.configuration_name

    def view(self, task: Union[str, int]) -> TaskView:
        index = self.registry.index(task)
        if index not in self.views:
            self.views[index] = TaskView(self.collection_plans, self.collection_dataset_json, self.registry, index,
                                         self.configuration_name, self.reorient)
        return self.views[index]

    def select_tasks(self, tasks: Sequence[Union[str, int]]) -> List[TaskView]:
        """Make the next predictions produce these tasks; they must share preprocessing.

        With one task the predictor behaves like a stock nnUNetPredictor for that task (its plans view, its
        task-local labels), so predict_from_files & co. work unchanged.
        """
        views = [self.view(t) for t in tasks]
        if not views:
            raise ValueError("select at least one task")
        if len({v.preprocessing_signature for v in views}) != 1:
            raise ValueError(f"tasks {[v.spec.name for v in views]} differ in preprocessing and cannot share a pass")
        self.active = views
        first = views[0]
        self.plans_manager = first.plans_manager
        self.configuration_manager = first.configuration_manager
        self.configuration_manager.antialias = self.antialias
        self.dataset_json = first.dataset_json
        self.label_manager = first.label_manager
        return views

    def select_task(self, task: Union[str, int], labels: Optional[Sequence[str]] = None) -> TaskView:
        """One task; `labels` (names) restricts the output to those of its labels (Hermes also computes only
        those task priors)."""
        view = self.select_tasks([task])[0]
        view.condition = self.registry.condition(view.index)
        if labels:
            unknown = [n for n in labels if n not in view.spec.foreground_labels]
            if unknown:
                raise ValueError(f"task {view.spec.name} has no label(s) {unknown}; its labels: "
                                 f"{sorted(view.spec.foreground_labels)}")
            view.condition = dataclasses.replace(view.condition, labels=tuple(view.spec.foreground_labels[n]
                                                                              for n in labels))
        return view

    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        if not self.active:
            raise RuntimeError(f"no task selected; call select_task(...) first (tasks: {self.registry.names})")
        network, label_manager, allow_tqdm, own_bar = self.network, self.label_manager, self.allow_tqdm, None
        if self._case_progress is None:  # one call = one case (--task): its own bar
            tiles = tile_count(self, input_image.shape[1:])
            own_bar = self._case_progress = CaseProgress("tiles", tiles, mirror_passes(self), allow_tqdm)
        self.network = TaskSlicedLogits(network, [v.condition for v in self.active],
                                        [v.spec.num_classes for v in self.active])
        self.label_manager = _head_count_label_manager(sum(v.spec.num_classes for v in self.active))
        self.allow_tqdm = False  # nnU-Net's per-call bar; the case's bar counts the tiles
        try:
            return super().predict_sliding_window_return_logits(input_image)
        finally:
            self.network, self.label_manager, self.allow_tqdm = network, label_manager, allow_tqdm
            if own_bar is not None:
                own_bar.close()
                self._case_progress = None

    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers, do_on_device: bool = True):
        # --tile_mirroring: each tile's mirroring, in slicer order (tiles reach the network in that order)
        self._tile_flips = iter(tile_mirrorings(slicers, self.allowed_mirroring_axes)
                                if self.tile_mirroring and not self.use_mirroring else [])
        return super()._internal_predict_sliding_window_return_logits(data, slicers, do_on_device)

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        flips = next(self._tile_flips, ())
        if flips:
            x = torch.flip(x, flips)
        if self.cpu_bf16 and self.device.type == "cpu":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                prediction = super()._internal_maybe_mirror_and_predict(x).float()
        else:
            prediction = super()._internal_maybe_mirror_and_predict(x)
        if flips:
            prediction = torch.flip(prediction, flips)
        if self._case_progress is not None:
            self._case_progress.tile_done()
        return prediction

    # ---- all tasks at once
    def _preprocess_group(self, image_files: List[str], views: List[TaskView]):
        """The case preprocessed for a group of tasks that share preprocessing."""
        self.select_tasks([v.index for v in views])
        preprocessor = self.configuration_manager.preprocessor_class(verbose=self.verbose_preprocessing)
        data, _, properties = preprocessor.run_case(image_files, None, self.plans_manager, self.configuration_manager,
                                                    self.dataset_json)
        return data, properties

    def _segment_group(self, views: List[TaskView], data: np.ndarray, properties: dict):
        """Predict the group's tasks with one encoder pass per tile, export each task."""
        self.select_tasks([v.index for v in views])
        logits = self.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        segmentations, start, out_properties = {}, 0, properties
        for v in views:
            block = logits[start:start + v.spec.num_classes]
            start += v.spec.num_classes
            seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                block, v.plans_manager, v.configuration_manager, v.label_manager, dict(properties))
            # groups may differ in training orientation: merge in the input's own voxel order
            segmentations[v.index], out_properties = segmentation_in_input_order(seg, properties)
        return segmentations, out_properties

    def _segment_case(self, files: List[str], groups: List[List[TaskView]], name: str):
        """Every task group of one case under one progress bar: ({task index: segmentation}, properties)."""
        # every group preprocessed first: the case's tiles are known before the first one runs
        prepared = [(views, *self._preprocess_group(files, views)) for views in groups]
        tiles = 0
        for views, data, _ in prepared:
            self.select_tasks([v.index for v in views])
            tiles += tile_count(self, data.shape[1:])
        announce(name, len(prepared), tiles, mirror_passes(self), sum(len(views) for views in groups))
        self._case_progress = CaseProgress(name, tiles, mirror_passes(self), self.allow_tqdm)
        per_task, properties = {}, None
        try:
            for views, data, group_properties in prepared:
                segs, properties = self._segment_group(views, data, group_properties)
                per_task.update(segs)
        finally:
            self._case_progress.close()
            self._case_progress = None
        return per_task, properties

    def _same_modality_tasks(self, files: Sequence[str], candidates: List[int]) -> List[int]:
        """Of tasks that accept the image's channel count, those of its modality: CT tasks for an image in
        Hounsfield units (minimum below CT_MINIMUM_HU, air), the other tasks otherwise."""
        is_ct = {t: self.registry.task(t).modalities[0].strip().lower() == "ct" for t in candidates}
        if len(set(is_ct.values())) < 2:
            return candidates
        image, _ = self.plans_manager.image_reader_writer_class().read_images([files[0]])
        looks_ct = float(np.min(image)) < CT_MINIMUM_HU
        return [t for t in candidates if is_ct[t] == looks_ct]

    def predict_all_tasks(self, list_of_lists: Sequence[Sequence[str]], output_files: Sequence[str],
                          tasks: Optional[Sequence[Union[str, int]]] = None,
                          modalities: Optional[Sequence[str]] = None,
                          priority: Optional[Sequence[Union[str, int]]] = None,
                          any_modality: bool = False) -> GlobalLabels:
        """For each case, predict every compatible task and write one merged label map (global labels, see
        inference.merge). Compatible: the image's channel count and modality (the modality names if given,
        otherwise CT tasks for a CT image and the others for any other image; `any_modality` drops the modality
        rule). Returns the global label table."""
        labels = GlobalLabels(self.registry)
        allowed = None if tasks is None else {self.registry.index(t) for t in tasks}
        order = None if priority is None else [self.registry.index(t) for t in priority]
        # Check every case first: fail before anything is written.
        compatible_per_case = []
        for files, ofile in zip(list_of_lists, output_files):
            compatible = [t for t in self.registry.tasks_for_channels(len(files), modalities)
                          if allowed is None or t in allowed]
            if compatible and modalities is None and not any_modality:
                compatible = self._same_modality_tasks(files, compatible)
            if not compatible:
                raise ValueError(f"{ofile}: no task accepts {len(files)} channel(s)"
                                 f"{'' if modalities is None else f' with modalities {list(modalities)}'}; tasks: "
                                 + ", ".join(f"{t.name} ({t.num_channels} ch)" for t in self.registry))
            print(f"{os.path.basename(ofile)}: {', '.join(self.registry.names[t] for t in compatible)}")
            compatible_per_case.append(compatible)
        for files, ofile, compatible in zip(list_of_lists, output_files, compatible_per_case):
            groups: Dict[tuple, List[TaskView]] = {}
            for t in compatible:
                groups.setdefault(self.view(t).preprocessing_signature, []).append(self.view(t))
            per_task, properties = self._segment_case(list(files), list(groups.values()), os.path.basename(ofile))
            merged = merge_task_segmentations(per_task, labels, order)
            rw = self.plans_manager.image_reader_writer_class()
            rw.write_seg(merged, ofile + self.dataset_json["file_ending"], properties)
        return labels


def write_global_labels(labels: GlobalLabels, output_folder: str) -> str:
    maybe_mkdir_p(output_folder)
    path = join(output_folder, "labels.json")
    save_json(labels.to_dict(), path, sort_keys=False)
    return path
