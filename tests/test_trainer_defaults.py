"""The plugin trainers' defaults around nnU-Net: checks before anything is written, CPU fallback for -device cuda,
final-validation workers sized to the machine; the predictor's quiet trainer lookup and CPU output."""
from __future__ import annotations

import io
import os
import sys

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
import pytest
import torch

from nnunetv2_universal.inference.predictor import (GPU_DONE_LINE, _plugin_trainer_class, plugin_trainers_found_first,
                                                    stdout_without)
from nnunetv2_universal.training.trainer_defaults import PluginTrainerDefaults, worker_processes


class _Stock:
    """Stands in for nnUNetTrainer: records what it was given."""

    def __init__(self, plans, configuration, fold, dataset_json, device):
        self.device = device
        self.logged = []

    def print_to_log_file(self, *args, also_print_to_console=False):
        self.logged.append(" ".join(map(str, args)))

    def perform_actual_validation(self, save_probabilities=False):
        self.workers_seen = nnunet_trainer_module.default_num_processes


class _Trainer(PluginTrainerDefaults, _Stock):
    pass


PLANS = {"plans_name": "P", "configurations": {"3d_fullres": {}}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_trains_on_the_cpu_with_a_notice(capsys):
    threads = torch.get_num_threads()
    try:
        trainer = _Trainer(PLANS, "3d_fullres", 0, {}, torch.device("cuda"))
    finally:
        torch.set_num_threads(threads)
    assert trainer.device.type == "cpu"
    assert "No CUDA device available: training on the CPU" in capsys.readouterr().err


def test_a_missing_configuration_is_refused_before_nnunet_starts():
    with pytest.raises(ValueError, match="plans 'P' have no configuration '2d'; they have 3d_fullres"):
        _Trainer(PLANS, "2d", 0, {}, torch.device("cpu"))


@pytest.mark.parametrize("setting, expected", [(None, os.cpu_count()), ("3", 3)])
def test_final_validation_uses_the_machines_cores_or_nnunet_def_n_proc(monkeypatch, setting, expected):
    if setting is None:
        monkeypatch.delenv("nnUNet_def_n_proc", raising=False)
    else:
        monkeypatch.setenv("nnUNet_def_n_proc", setting)
    before = nnunet_trainer_module.default_num_processes
    trainer = _Trainer(PLANS, "3d_fullres", 0, {}, torch.device("cpu"))
    trainer.perform_actual_validation()
    assert worker_processes() == expected and trainer.workers_seen == expected
    assert nnunet_trainer_module.default_num_processes == before  # restored
    assert f"with {expected} worker process(es)" in trainer.logged[0]


def test_cpu_prediction_output_drops_only_the_gpu_line(monkeypatch):
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stdout", captured)
    with stdout_without(GPU_DONE_LINE):
        print("done with case_1.nii.gz")
        print("GPU prediction completed. Waiting for remaining segmentation exports to finish...")
        print("after")
    assert captured.getvalue() == "done with case_1.nii.gz\nafter\n"


def test_plugin_trainers_are_found_without_nnunets_search(capsys):
    from nnunetv2.inference import predict_from_raw_data
    from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer
    assert _plugin_trainer_class("UniSegTrainer") is UniSegTrainer
    with plugin_trainers_found_first():
        assert predict_from_raw_data.recursive_find_trainer_class_by_name("UniSegTrainer") is UniSegTrainer
    assert "not found" not in capsys.readouterr().out
