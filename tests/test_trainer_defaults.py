"""The plugin trainers' defaults around nnU-Net: checks before anything is written, CPU fallback for -device cuda,
final-validation workers sized to the machine; the predictor's quiet trainer lookup and CPU output."""
from __future__ import annotations

import io
import multiprocessing
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
        self.pools_seen = nnunet_trainer_module.multiprocessing.get_context("spawn").Pool


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


@pytest.mark.parametrize("setting, expected", [(None, os.cpu_count()), ("3", 3), ("1", 1)])
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
    # one worker: nnU-Net's export pool is a thread of this process (no spawned interpreter to start)
    in_process = trainer.pools_seen(1).__class__.__name__ == "ThreadPool"
    assert in_process == (expected == 1) and nnunet_trainer_module.multiprocessing is multiprocessing
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


def test_partial_mirroring_is_a_subset_of_the_models_axes():
    from nnunetv2_universal.inference.input_checks import PredictionInputError
    from nnunetv2_universal.inference.predict_cli import mirror_axes_subset
    assert mirror_axes_subset((0, 1, 2), [2]) == (2,)
    assert mirror_axes_subset((0, 1, 2), [2, 1, 2]) == (1, 2)
    with pytest.raises(PredictionInputError, match=r"the model mirrors over no axes only .* axes \[2\]"):
        mirror_axes_subset(None, [2])
    with pytest.raises(PredictionInputError, match=r"mirrors over \[1, 2\] only"):
        mirror_axes_subset((1, 2), [0])


def test_fast_says_nothing_for_a_model_trained_without_mirroring():
    from nnunetv2_universal.inference.predict_cli import fast_notice
    assert fast_notice(None) is None and fast_notice(()) is None
    assert "-mirror_axes 2 or -mirror_axes 1 2 instead of --fast" in fast_notice((1, 2))


@pytest.mark.parametrize("flags, expected", [
    ([], {"tile_step_size": 0.5, "use_mirroring": True, "use_gaussian": True, "cpu_bf16": False}),
    (["--fast"], {"tile_step_size": 0.5, "use_mirroring": False, "use_gaussian": True, "cpu_bf16": "native",
                  "tile_mirroring": True}),
    (["--fast", "-step_size", "0.75"], {"tile_step_size": 0.75, "use_mirroring": False, "use_gaussian": True,
                                        "cpu_bf16": "native", "tile_mirroring": True}),
    (["--disable_tta", "--cpu_bf16"], {"tile_step_size": 0.5, "use_mirroring": False, "use_gaussian": True,
                                       "cpu_bf16": True}),
    (["--uniform_tiles"], {"tile_step_size": 0.5, "use_mirroring": True, "use_gaussian": False, "cpu_bf16": False}),
    (["-mirror_axes", "2", "1"], {"tile_step_size": 0.5, "use_mirroring": True, "use_gaussian": True,
                                  "cpu_bf16": False, "mirror_axes": (1, 2)}),
    (["--antialias"], {"tile_step_size": 0.5, "use_mirroring": True, "use_gaussian": True, "cpu_bf16": False,
                       "antialias": True}),
    (["--disable_tta", "--tile_mirroring"], {"tile_step_size": 0.5, "use_mirroring": False, "use_gaussian": True,
                                             "cpu_bf16": False, "tile_mirroring": True}),
])
def test_the_fast_path_flags_reach_the_predictor(flags, expected, monkeypatch, capsys):
    from nnunetv2_universal.inference import predict_cli
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    from nnunetv2_universal.devices import cpu_has_native_bf16
    if expected["cpu_bf16"] == "native":  # --fast uses bf16 only where the CPU has it in hardware
        expected = dict(expected, cpu_bf16=cpu_has_native_bf16())
    # a model trained mirroring every axis
    expected = {"mirror_axes": (0, 1, 2), "antialias": False, "tile_mirroring": False, **expected}
    args = predict_cli._parser().parse_args(["-d", "900", "--task", "T", "-i", "in", "-o", "out"] + flags)
    assert predict_cli.predictor_settings(args) == {k: v for k, v in expected.items() if k != "mirror_axes"}
    made = {}

    class Stop(Exception):
        pass

    def initialise(self, *a, **k):  # the predictor as main() configured it, before any model is read
        made.update(tile_step_size=self.tile_step_size, use_mirroring=self.use_mirroring,
                    use_gaussian=self.use_gaussian, cpu_bf16=self.cpu_bf16, antialias=self.antialias,
                    tile_mirroring=self.tile_mirroring)
        self.allowed_mirroring_axes = (0, 1, 2)
        made["predictor"] = self

    def output_folder(path):  # after the model is read: what the predictor mirrors over
        made["mirror_axes"] = made.pop("predictor").allowed_mirroring_axes
        raise Stop

    monkeypatch.setattr(predict_cli, "_model_folder", lambda args: "model")
    monkeypatch.setattr(predict_cli, "load_json", lambda path: {"file_ending": ".nii.gz"})
    monkeypatch.setattr(predict_cli.TaskRegistry, "from_dataset_json", staticmethod(lambda d: None))
    monkeypatch.setattr(predict_cli, "check_request", lambda *a: None)
    monkeypatch.setattr(predict_cli, "check_input_folder", lambda *a: [])
    monkeypatch.setattr(UniversalPredictor, "initialize_from_trained_model_folder", initialise)
    monkeypatch.setattr(predict_cli, "maybe_mkdir_p", output_folder)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(Stop):
            predict_cli.main(["-d", "900", "--task", "T", "-i", "in", "-o", "out", "-device", "cpu"] + flags)
    finally:
        torch.set_num_threads(threads)
    assert made == expected
    # --fast on this model (trained mirroring) says that the answer changes, and what lies in between
    notice = ("trained mirroring over axes [0, 1, 2]; with one mirroring per tile instead of 8 per tile its answer "
              "changes")
    assert (notice in capsys.readouterr().err) == ("--fast" in flags)


def test_bf16_autocast_runs_the_network_in_bfloat16_on_the_cpu_and_returns_float32():
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.linear(x, torch.ones(x.shape[-1], x.shape[-1]))
            seen.append(y.dtype)
            return y

    predictor = UniversalPredictor(device=torch.device("cpu"), use_mirroring=False, allow_tqdm=False)
    predictor.network = Net()
    x = torch.randn(1, 1, 2, 4)
    predictor.cpu_bf16 = False
    reference = predictor._internal_maybe_mirror_and_predict(x)
    predictor.cpu_bf16 = True
    fast = predictor._internal_maybe_mirror_and_predict(x)
    assert seen == [torch.float32, torch.bfloat16] and fast.dtype == torch.float32
    assert torch.allclose(fast, reference, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("patch, shape, expected", [((8, 16, 16), (8, 24, 16), 2), ((16, 16), (5, 16, 40), 5 * 4),
                                                    ((8, 16, 16), (4, 10, 10), 1)])
def test_tile_count_is_what_nnunets_sliding_window_runs(patch, shape, expected):
    """3D, a 2D patch over the slices of a 3D image, an image smaller than the patch (nnU-Net pads it)."""
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    from nnunetv2_universal.inference.progress import tile_count
    predictor = UniversalPredictor(device=torch.device("cpu"), tile_step_size=0.5, allow_tqdm=False)
    predictor.configuration_manager = type("Config", (), {"patch_size": list(patch)})()
    assert tile_count(predictor, shape) == expected



MIRRORINGS = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]  # flipped dimensions of a 3D network input


def _tile_mirroring_run(mirror_axes, use_mirroring=False):
    """--tile_mirroring's sliding window over a random 8 x 16 x 16 image (27 tiles of 4 x 8 x 8) with a voxel-wise
    network (it commutes with any flip); returns the image, the output, and each tile's slicer with the mirrorings
    its passes saw."""
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    predictor = UniversalPredictor(device=torch.device("cpu"), tile_step_size=0.5, use_mirroring=use_mirroring,
                                   allow_tqdm=False)
    predictor.configuration_manager = type("Config", (), {"patch_size": [4, 8, 8]})()
    predictor.label_manager = type("Labels", (), {"num_segmentation_heads": 1})()
    predictor.allowed_mirroring_axes, predictor.tile_mirroring, seen = mirror_axes, True, []
    predictor.use_gaussian = False  # equal weights: the tiles' mean is exact in nnU-Net's float16 accumulator

    class VoxelWise(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return 2 * x

    predictor.network = VoxelWise()
    data = torch.rand(1, 8, 16, 16)
    slicers = predictor._internal_get_sliding_window_slicers(data.shape[1:])
    out = predictor._internal_predict_sliding_window_return_logits(data, slicers, False)
    passes = len(seen) // len(slicers)
    tiles = [(sl, [next(f for f in MIRRORINGS if torch.equal(x, torch.flip(data[sl][None], f)))
                   for x in seen[i * passes:(i + 1) * passes]]) for i, sl in enumerate(slicers)]
    return data, out.float(), tiles


def test_tile_mirroring_gives_overlapping_tiles_different_mirrorings_and_maps_each_back():
    data, out, tiles = _tile_mirroring_run((0, 1, 2))
    assert torch.allclose(out, 2 * data, atol=1e-2)  # every tile flipped back before it is added
    assert len(tiles) == 27 and all(len(seen) == 1 for _, seen in tiles)  # one pass per tile
    # the 8 tiles over the centre voxel carry the 8 mirrorings of nnU-Net's test-time augmentation
    over_centre = [seen[0] for sl, seen in tiles if all(s.start <= c < s.stop for s, c in zip(sl[1:], (4, 8, 8)))]
    assert sorted(over_centre) == sorted(MIRRORINGS)


@pytest.mark.parametrize("mirror_axes, use_mirroring, passes, flipped", [
    ((1, 2), False, 1, {(), (3,), (4,), (3, 4)}),  # only the axes the model mirrors
    (None, False, 1, {()}),  # a model trained without mirroring: every tile as stored (--fast = the default)
    ((0, 1, 2), True, 8, set(MIRRORINGS)),  # nnU-Net's test-time mirroring: 8 passes per tile, none added
])
def test_tile_mirroring_only_over_the_models_axes_and_only_without_tta(mirror_axes, use_mirroring, passes, flipped):
    data, out, tiles = _tile_mirroring_run(mirror_axes, use_mirroring)
    assert torch.allclose(out, 2 * data, atol=1e-2)
    assert all(len(seen) == passes for _, seen in tiles)
    assert {f for _, seen in tiles for f in seen} == flipped
    if use_mirroring:
        assert all(sorted(seen) == sorted(MIRRORINGS) for _, seen in tiles)
