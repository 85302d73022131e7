"""What every plugin trainer does around nnU-Net's own start and final validation.

- Checks that need only the plans and dataset.json run before nnU-Net's __init__ creates the output folder and
  the training log; inside stock `nnUNetv2_train` a failure is one line and exit status 2, nothing written.
- `-device cuda` on a machine without CUDA trains on the CPU with a notice (as prediction does) instead of
  failing later in the first `.to(device)`.
- Final validation's export and metric workers: nnU-Net starts 8 (its default without nnUNet_def_n_proc) even on
  two cores, which spends most of a small run's validation starting processes; here the machine's cores, or
  nnUNet_def_n_proc when set. What runs is announced. With one worker the pools run in this process
  (`worker_pools.py`).
- Parameters a step did not use (other tasks' heads and rows, unrouted experts, absent stems) stay exactly still
  (`training/idle_parameters.py`).
"""
from __future__ import annotations

import contextlib
import os

import nnunetv2.evaluation.evaluate_predictions as nnunet_evaluation
import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
import torch

from nnunetv2_universal.cli import stock_command_errors
from nnunetv2_universal.devices import usable_device
from nnunetv2_universal.training.idle_parameters import IdleParametersStayStill
from nnunetv2_universal.worker_pools import pools_in_process


def worker_processes() -> int:
    """Worker processes for exports and metrics: nnUNet_def_n_proc when set, else the machine's cores."""
    if os.environ.get("nnUNet_def_n_proc"):
        return max(1, int(os.environ["nnUNet_def_n_proc"]))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def nnunet_workers(count: int):
    """nnU-Net's validation reads its module-level default_num_processes; set it for the duration. One worker: its
    export and metric pools run in this process (worker_pools.py)."""
    saved = nnunet_trainer_module.default_num_processes
    nnunet_trainer_module.default_num_processes = count
    try:
        with pools_in_process(count, nnunet_trainer_module, nnunet_evaluation):
            yield
    finally:
        nnunet_trainer_module.default_num_processes = saved


def training_device(device: torch.device) -> torch.device:
    usable = usable_device(device, "training")
    if usable.type != device.type:
        torch.set_num_threads(os.cpu_count() or 1)  # nnUNetv2_train set 1 thread for the GPU it assumed
    return usable


class PluginTrainerDefaults:
    """Mixin placed before nnUNetTrainer (see the module docstring)."""

    final_validation_runs = True  # False where a trainer has nothing to validate (M4oE's masked pre-training)
    idle_parameters_stay_still = True  # False: nnU-Net's behaviour (zero-gradient parameters drift)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        with stock_command_errors():
            self.check_before_start(plans, configuration, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, training_device(device))

    def initialize(self):
        super().initialize()
        if self.idle_parameters_stay_still:
            IdleParametersStayStill(self.optimizer)

    @classmethod
    def check_before_start(cls, plans: dict, configuration: str, dataset_json: dict) -> None:
        """Raise an expected error (ValueError, KeyError, ...) naming what to do if this trainer cannot train on
        these plans and dataset; runs before anything is written."""
        if configuration not in plans.get("configurations", {}):
            raise ValueError(f"plans {plans.get('plans_name')!r} have no configuration {configuration!r}; they have "
                             f"{', '.join(plans.get('configurations', {}))}")

    def announce_final_validation(self) -> int:
        """Say what final validation runs with; returns the number of export/metric workers."""
        workers = worker_processes()
        self.print_to_log_file(f"Final validation on the fold's validation cases with {workers} worker process(es) "
                               f"for export and metrics (nnUNet_def_n_proc sets it)", also_print_to_console=True)
        return workers

    def perform_actual_validation(self, save_probabilities: bool = False):
        # nnU-Net's validation (trainers with their own, such as UniSegTrainer, call announce_final_validation)
        if not self.final_validation_runs:
            return super().perform_actual_validation(save_probabilities)
        with nnunet_workers(self.announce_final_validation()):
            super().perform_actual_validation(save_probabilities)
