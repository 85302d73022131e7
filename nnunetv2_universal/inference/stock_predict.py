"""Task choice for stock `nnUNetv2_predict` through the environment variable `nnUNet_universal_task`.

nnU-Net's predictor calls `network(x)` with the image only and preprocesses with the configuration it holds. When
the variable names a task, the trainer's `build_network_architecture` (which the predictor calls with the very
ConfigurationManager and PlansManager it then preprocesses and exports with, and without deep supervision) calls
`apply_task_from_environment`: it switches those managers to the task's spacing, normalisation and reader, sets
the network's default condition and hides the logit channels beyond the task's classes, so nnU-Net's argmax
exports task-local labels. The plugin's `nnUNetv2_universal_predict --task` does the same without the variable.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_universal.cli import stock_command_errors
from nnunetv2_universal.collection.normalization import use_plugin_preprocessing
from nnunetv2_universal.collection.task_plans import PER_TASK_CONFIGURATION_KEYS, TASKS_KEY
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.orientation import orient_plans_manager

TASK_ENV = "nnUNet_universal_task"
_plugin_predictor_depth = 0  # > 0 while a plugin trainer or predictor builds a network (they choose tasks themselves)


@contextmanager
def plugin_predictor_builds():
    """A plugin trainer or the plugin's predictor builds the network: it sets the task itself, so the environment
    variable is neither applied nor required."""
    global _plugin_predictor_depth
    _plugin_predictor_depth += 1
    try:
        yield
    finally:
        _plugin_predictor_depth -= 1


def check_environment_task(task: Optional[str], tasks: dict) -> None:
    """$nnUNet_universal_task names one of the model's tasks (not needed for a model without tasks)."""
    if not task:
        if not tasks:
            return
        listing = "; ".join(f"{name} ({len(s.get('modalities', []))} channel(s): {', '.join(s.get('modalities', []))})"
                            for name, s in tasks.items())
        raise RuntimeError(f"this is a universal model: stock nnUNetv2_predict needs {TASK_ENV}=<task> in the "
                           f"environment to know which task to segment (or use nnUNetv2_universal_predict --task / "
                           f"--all-tasks). Tasks: {listing}")
    if task not in tasks:
        raise KeyError(f"{TASK_ENV}={task!r} is not a task of this model; valid tasks: {', '.join(tasks)}")


def apply_task_from_environment(network: nn.Module, plans_manager: PlansManager,
                                configuration_manager: ConfigurationManager) -> Optional[str]:
    """Apply $nnUNet_universal_task (if set) to the predictor's managers and the network; returns the task name."""
    if _plugin_predictor_depth:
        return None
    task = os.environ.get(TASK_ENV)
    tasks = configuration_manager.configuration.get(TASKS_KEY, {})
    with stock_command_errors("-o"):  # inside stock nnUNetv2_predict: one line, no empty output folder
        check_environment_task(task, tasks)
    if not task:
        return None
    settings = tasks[task]
    for key in PER_TASK_CONFIGURATION_KEYS:
        if key in settings:
            configuration_manager.configuration[key] = settings[key]
    plans_manager.plans["foreground_intensity_properties_per_channel"] = settings[
        "foreground_intensity_properties_per_channel"]
    plans_manager.plans["image_reader_writer"] = settings["image_reader_writer"]
    orient_plans_manager(plans_manager, settings.get("orientation"))  # inputs in the task's training orientation
    use_plugin_preprocessing(configuration_manager)  # the plugin's normalisation schemes
    network.condition = Condition(task=list(tasks).index(task))  # universal_tasks is kept in registry order
    network.visible_classes = int(settings["num_classes"])
    return task
