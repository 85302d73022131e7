"""Per-task views of a collection's plans.

A collection shares one architecture and patch size, but every member task keeps its own target spacing,
normalisation and image reader. The collection plans store those per-task settings under
`configurations[<cfg>]["universal_tasks"][<task>]`; `task_plans` turns them into an ordinary nnU-Net plans dict
for one task, so nnU-Net's own preprocessor, predictor and export run unchanged. Preprocessing, validation and
prediction all go through this one function.
"""
from __future__ import annotations

import copy
from typing import Mapping

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunetv2_universal.orientation import ORIENTATION_KEY, OrientedPlansManager
from nnunetv2_universal.registry import TaskRegistry, TaskSpec

TASKS_KEY = "universal_tasks"
# Keys of a configuration that a task overrides.
PER_TASK_CONFIGURATION_KEYS = ("spacing", "normalization_schemes", "use_mask_for_norm", "median_image_size_in_voxels")


def ct_window_intensity_properties(low: float, high: float) -> dict:
    """Intensity properties that make nnU-Net's CTNormalization compute (clip(x, low, high) - low) / (high - low)."""
    return {"percentile_00_5": low, "percentile_99_5": high, "mean": low, "std": high - low,
            "median": (low + high) / 2, "min": low, "max": high}


def task_plans(plans: Mapping, task: str, configuration: str = "3d_fullres") -> dict:
    """A plain nnU-Net plans dict for one task of a collection."""
    try:
        settings = plans["configurations"][configuration][TASKS_KEY][task]
    except KeyError:
        available = sorted(plans.get("configurations", {}).get(configuration, {}).get(TASKS_KEY, {}))
        raise KeyError(f"plans {plans.get('plans_name')!r} have no settings for task {task!r} in configuration "
                       f"{configuration!r}; tasks with settings: {available}") from None
    specialised = copy.deepcopy(dict(plans))
    cfg = specialised["configurations"][configuration]
    for key in PER_TASK_CONFIGURATION_KEYS:
        if key in settings:
            cfg[key] = copy.deepcopy(settings[key])
    specialised["foreground_intensity_properties_per_channel"] = copy.deepcopy(
        settings["foreground_intensity_properties_per_channel"])
    specialised["image_reader_writer"] = settings["image_reader_writer"]
    specialised[ORIENTATION_KEY] = settings.get("orientation")  # None (plans without it): no reorientation
    return specialised


def task_dataset_json(dataset_json: Mapping, task: TaskSpec) -> dict:
    """The dataset.json nnU-Net's label handling and export should see for one task (task-local labels)."""
    return {"channel_names": dict(task.channels), "labels": dict(task.labels),
            "file_ending": dataset_json["file_ending"], "numTraining": dataset_json.get("numTraining", 0),
            "name": task.name, "description": task.description}


class TaskView:
    """PlansManager, ConfigurationManager, dataset.json and LabelManager of one task, built once. Its reader brings
    images to the task's training orientation unless `reorient` is False (see nnunetv2_universal.orientation)."""

    def __init__(self, plans: Mapping, dataset_json: Mapping, registry: TaskRegistry, task, configuration: str,
                 reorient: bool = True):
        self.index = registry.index(task)
        self.spec = registry.task(self.index)
        self.plans_manager = OrientedPlansManager(task_plans(plans, self.spec.name, configuration), reorient)
        self.configuration_manager: ConfigurationManager = self.plans_manager.get_configuration(configuration)
        self.dataset_json = task_dataset_json(dataset_json, self.spec)
        self.label_manager = self.plans_manager.get_label_manager(self.dataset_json)
        self.condition = registry.condition(self.index)

    @property
    def preprocessing_signature(self) -> tuple:
        """Tasks with equal signatures preprocess an image identically (and can share an encoder pass)."""
        cm = self.configuration_manager
        return (tuple(cm.spacing), tuple(cm.normalization_schemes), tuple(cm.use_mask_for_norm),
                repr(sorted(self.plans_manager.foreground_intensity_properties_per_channel.items())),
                self.plans_manager.plans["image_reader_writer"], self.plans_manager.plans.get(ORIENTATION_KEY))
