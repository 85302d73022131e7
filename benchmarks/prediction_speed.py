"""Prediction a person can wait for: the released UniSeg architecture on a real CT on this machine, default vs
`--fast`, and how far `--fast` agrees with the default on trained models.

    python benchmarks/prediction_speed.py --ct TotalSegmentator/tests/reference_files/example_ct.nii.gz \
        --agreement $RA/results/seed0/Dataset910_RealCT/UniSegTrainerTaskHeads_cpuDemo__UniSegPlansCPUDemo__3d_fullres=$RA/raw/Dataset511_RealLiverCT/imagesTs \
        --agreement $CB/results/seed0/Dataset900_Synth/UniSegTrainerTaskHeads_cpuDemo__UniSegPlansCPUDemo__3d_fullres=$CB/raw/Dataset501_SynthLiverCT/imagesTs \
        --mirrored_from $RA --out benchmarks/prediction_speed_cpu.json

($RA: a benchmarks/real_anatomy.py --workdir, $CB: a benchmarks/conditioning.py --workdir.)

1. The released architecture (the `paper` template: 32,114,381 parameters, patch 64x192x192, 11 tasks) with random
   weights, in a model folder written as `nnUNetv2_universal_import_uniseg_v1` writes it, predicts `--task` on the
   CT through the plugin's predictor: one tile in fp32 and in bfloat16 (median of --repeats), the tiles of the
   default (step 0.5, 8 mirrorings) and of step 1, and one whole --fast case (no mirroring; bf16 only on CPUs with
   bf16 in hardware). The
   default case is extrapolated from the measured tile time (tiles x mirrorings x fp32 tile + the fast case's
   pre/post-processing): at tens of seconds a tile, it runs for most of an hour.
2. Agreement: each `MODEL_FOLDER=IMAGES` pair (trained models) predicts every case of IMAGES with the default
   settings (as trained: mirroring only if the model allows it), with --fast, with --fast plus bf16 forced, and with
   --fast plus step 1 (fewest tiles), and with mirroring over the x axis only and over y and x (`-mirror_axes`: 2 and 4
   passes instead of 8; differs from the default only on models trained with mirroring); Dice of each against the
   default per label, and wall times (`--variants` picks some). Random weights say nothing about agreement, trained
   models do. `--mirrored_from WORKDIR` trains such models with mirroring on the real-CT collection (one per
   `--mirrored_seeds`, for `--mirrored_epochs`) and reports the medians over seeds.
3. `--device cuda` (on a GPU): the same on the GPU, under nnU-Net's float16 autocast, with the default case measured
   instead of extrapolated and the peak GPU memory of each case; `--training` adds UniSeg's training step (time and
   peak memory) against stock nnU-Net's PlainConvUNet with the same stages and patch, measured in the same run:

    python benchmarks/prediction_speed.py --device cuda --training --ct .../example_ct.nii.gz \
        --agreement MODEL_FOLDER=IMAGES ... --out benchmarks/prediction_speed_gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from uniseg_iteration import build, measure  # noqa: E402  (the paper network, as the training benchmark builds it)

from nnunetv2_universal.collection.templates import PAPER  # noqa: E402
from nnunetv2_universal.devices import cpu_has_native_bf16  # noqa: E402
from nnunetv2_universal.finetuning.uniseg11_tasks import paper_registry  # noqa: E402
from nnunetv2_universal.finetuning.uniseg_v1_import import write_model_folder  # noqa: E402
from nnunetv2_universal.inference.predict_cli import _parser, mirror_axes_subset, predictor_settings  # noqa: E402
from nnunetv2_universal.inference.predictor import UniversalPredictor  # noqa: E402
from nnunetv2_universal.inference.progress import mirror_passes, tile_count  # noqa: E402

FAST = {"use_mirroring": False, "cpu_bf16": cpu_has_native_bf16()}  # one pass per tile (the variants' "fast")
# what --fast sets today (one pass per tile, tiles mirrored in turn), from the command's own settings
FAST_COMMAND = {k: v for k, v in predictor_settings(_parser().parse_args(["-d", "0", "--fast"])).items()
                if k in ("tile_step_size", "use_mirroring", "cpu_bf16", "tile_mirroring")}
FEWEST_TILES = {"tile_step_size": 1.0}


DEVICE = torch.device("cpu")  # --device


def predictor_for(model_folder: str, task: str, tile_step_size=0.5, use_mirroring=True, cpu_bf16=False,
                  mirror_axes=None, tile_mirroring=False):
    predictor = UniversalPredictor(tile_step_size=tile_step_size, use_mirroring=use_mirroring, device=DEVICE,
                                   perform_everything_on_device=DEVICE.type == "cuda", allow_tqdm=False,
                                   verbose=False)
    predictor.initialize_from_trained_model_folder(model_folder, (0,), "checkpoint_final.pth")
    if mirror_axes is not None and predictor.allowed_mirroring_axes:  # as -mirror_axes (models trained mirroring)
        predictor.allowed_mirroring_axes = mirror_axes_subset(predictor.allowed_mirroring_axes, mirror_axes)
    predictor.cpu_bf16, predictor.tile_mirroring = cpu_bf16, tile_mirroring
    predictor.select_task(task)
    return predictor


def preprocess(predictor, files):
    pre = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = pre.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                              predictor.dataset_json)
    return data


def tile_seconds(predictor, channels: int, repeats: int, bf16: bool, shape=None) -> float:
    """One tile (or an input of `shape`) through the predictor's sliding window (no mirroring), median of
    `repeats` after one warm-up."""
    predictor.cpu_bf16, mirroring = bf16, predictor.use_mirroring
    predictor.use_mirroring = False
    x = torch.randn(channels, *(shape or predictor.configuration_manager.patch_size))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        predictor.predict_sliding_window_return_logits(x)
        _sync()
        if i:
            times.append(time.perf_counter() - start)
    predictor.use_mirroring = mirroring
    return statistics.median(times)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed_case(predictor, ct: str, out: str) -> dict:
    """One whole case through the predictor's files path; seconds (and peak GPU memory on CUDA)."""
    os.makedirs(out)
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    predictor.predict_from_files_sequential([[ct]], out, False, True, None)
    _sync()
    result = {"seconds": round(time.perf_counter() - start, 1)}
    if DEVICE.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return result


def released_architecture(ct: str, task: str, repeats: int, root: str) -> dict:
    torch.manual_seed(0)
    network = build("uniseg", PAPER["patch_size"])  # 4 classes, stems 1/2/4: what the 11 tasks need
    if network.num_classes != paper_registry().max_num_classes:
        raise RuntimeError("the paper network no longer matches the 11-task registry")
    folder = write_model_folder(network, PAPER, 990, "ReleasedArchitecture", root, True, "random weights")
    default = predictor_for(folder, task)
    data = preprocess(default, [ct])
    tiles = {"default": tile_count(default, data.shape[1:])}
    fast = predictor_for(folder, task, **FAST_COMMAND)
    tiles["fast"] = tile_count(fast, data.shape[1:])
    tiles["fewest (step 1)"] = tile_count(predictor_for(folder, task, **FAST, **FEWEST_TILES), data.shape[1:])
    passes = mirror_passes(default)
    # nnU-Net autocasts to float16 on CUDA, never on the CPU
    precision = "fp16 autocast" if DEVICE.type == "cuda" else "fp32"
    per_tile = {precision: tile_seconds(default, data.shape[0], repeats, False)}
    if FAST["cpu_bf16"] and DEVICE.type == "cpu":
        per_tile["bf16"] = tile_seconds(default, data.shape[0], repeats, True)
    # (without bf16 in hardware torch emulates it, on one thread: timing it at this size ran for over 10 minutes
    # on the 2-core AVX2 machine without finishing, so it is not timed there; the agreement part times bf16 on the
    # small models)
    fast_case = timed_case(fast, ct, os.path.join(root, "fast_case"))
    fast_tile = per_tile["bf16" if "bf16" in per_tile else precision]
    overhead = max(0.0, fast_case["seconds"] - tiles["fast"] * fast_tile)
    per_case = {"fast_measured": fast_case["seconds"], "pre_and_post_processing": round(overhead, 1)}
    memory = {"fast": fast_case["peak_gpu_memory_gib"]} if DEVICE.type == "cuda" else None
    if DEVICE.type == "cuda":  # seconds there: measure the default case too
        default_case = timed_case(default, ct, os.path.join(root, "default_case"))
        per_case["default_measured"], memory["default"] = default_case["seconds"], default_case["peak_gpu_memory_gib"]
    else:  # most of an hour on a CPU: tiles x passes x tile + the measured pre/post-processing
        per_case["default_extrapolated"] = round(tiles["default"] * passes * per_tile[precision] + overhead, 1)
    result = {"parameters": sum(p.numel() for p in network.parameters()), "task": task,
              "image_voxels_xyz": list(sitk.ReadImage(ct).GetSize()),
              "preprocessed_shape_zyx": list(data.shape[1:]), "patch": list(default.configuration_manager.patch_size),
              "tiles": tiles, "mirror_passes_default": passes,
              "seconds_per_tile": {k: round(v, 3) for k, v in per_tile.items()}, "seconds_per_case": per_case}
    if memory:
        result["peak_gpu_memory_gib_per_case"] = memory
    return result


def training_step(patch, batch: int, iters: int) -> dict:
    """UniSeg's training step against stock nnU-Net's PlainConvUNet with the same stages, kernels, strides and patch
    (uniseg_iteration.py's measurement: time, and peak memory on CUDA), in this run."""
    result = {k: measure(k, DEVICE.type, patch, batch, iters) for k in ("stock", "uniseg")}
    result["ratio_iter_time"] = round(result["uniseg"]["median_iter_s"] / result["stock"]["median_iter_s"], 3)
    if DEVICE.type == "cuda":
        result["ratio_peak_mem"] = round(result["uniseg"]["peak_mem_gib"] / result["stock"]["peak_mem_gib"], 3)
    return {**result, "patch": list(patch), "batch": batch, "iterations_timed": iters}


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else float(2 * (x & y).sum() / total)


VARIANTS = {"fast": FAST, "fast_bf16": {**FAST, "cpu_bf16": True}, "fast_fewest_tiles": {**FAST, **FEWEST_TILES},
            # partial test-time mirroring (-mirror_axes): 2 and 4 passes instead of 8
            "mirror_x": {"mirror_axes": (2,)}, "mirror_yx": {"mirror_axes": (1, 2)},
            # one pass per tile, each tile mirrored by its place (--tile_mirroring); fewer tiles, overlap >= 25 %
            "fast_tile_mirroring": {**FAST, "tile_mirroring": True}, "fast_step_075": {**FAST, "tile_step_size": 0.75},
            "fast_tile_mirroring_step_075": {**FAST, "tile_mirroring": True, "tile_step_size": 0.75}}
# (bf16 forced: its agreement, whatever it costs on this CPU)


def agreement(model_folder: str, images: str, root: str, variants=tuple(VARIANTS)) -> dict:
    """Every case of `images` with the default settings and each variant; Dice of a variant against the default."""
    dataset_json = json.load(open(os.path.join(model_folder, "dataset.json")))
    ending = dataset_json["file_ending"]
    cases = sorted(f[:-len(ending) - 5] for f in os.listdir(images) if f.endswith("_0000" + ending))
    task, runs = _task_of(images, dataset_json), {}
    for name, settings in {"default": {}, **{v: VARIANTS[v] for v in variants}}.items():
        predictor = predictor_for(model_folder, task, **settings)
        out = os.path.join(root, f"{len(os.listdir(root))}_{name}")
        os.makedirs(out)
        start = time.perf_counter()
        predictor.predict_from_files_sequential(images, out, False, True, None)
        runs[name] = {"seconds": round(time.perf_counter() - start, 1), "folder": out,
                      "mirror_passes": mirror_passes(predictor), "step": predictor.tile_step_size,
                      "bf16": predictor.cpu_bf16, "tile_mirroring": predictor.tile_mirroring}

    def read(name, case):
        return sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(runs[name]["folder"], case + ending)))

    # the model folder as DatasetXXX/Trainer__Plans__Configuration: no machine path in the results
    result = {"model": os.path.join(*model_folder.rstrip(os.sep).split(os.sep)[-2:]), "task": task,
              "default": runs["default"]}
    for name in variants:
        per_case = {}
        for case in cases:
            a, b = read("default", case), read(name, case)
            labels = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
            per_case[case] = {str(k): round(dice(b, a, k), 4) for k in labels}
        result[name] = {**runs[name], "dice_vs_default": per_case,
                        "min_dice_vs_default": min((v for r in per_case.values() for v in r.values()), default=1.0)}
    for run in [result["default"]] + [result[n] for n in variants]:
        run.pop("folder")
    return result


def _task_of(images: str, dataset_json: dict) -> str:
    """The task whose member's cases are in `images` (nnUNet_raw/DatasetXXX_Name/imagesTs)."""
    member = os.path.basename(os.path.dirname(os.path.abspath(images)))
    for task in dataset_json["universal"]["tasks"]:
        if task.get("dataset") == member:
            return task["name"]
    raise ValueError(f"no task of the model comes from {member}")


def train_mirrored(workdir: str, results: str, dataset: str = "Dataset910_RealCT", seed: int = 0,
                   epochs: int = 50, threads: int = 1) -> str:
    """The task-head trainer on the demo's schedule (`epochs` x 16 iterations; the demo's 50 = 800 iterations), but
    with nnU-Net's mirroring (augmentation and test-time), on a real_anatomy.py workdir's collection; a trained
    model whose default prediction mirrors 8 times. Returns the model folder. Runs in a child process: nnU-Net reads
    its paths from the environment at import."""
    env = dict(os.environ, nnUNet_raw=os.path.join(workdir, "raw"), nnUNet_preprocessed=os.path.join(workdir, "pre"),
               nnUNet_results=results, nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--_child_train", dataset, str(seed), str(epochs),
                    str(threads)], env=env, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(results, dataset, "UniSegTrainerTaskHeads__UniSegPlansCPUDemo__3d_fullres")


def _child_train(dataset: str, seed: int, epochs: int, threads: int) -> None:
    import random
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2_universal.training.task_heads_trainer import UniSegTrainerTaskHeads
    from nnunetv2_universal.training.variants.short_schedules import _DemoSchedule
    torch.set_num_threads(threads)
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)

    class Mirrored(_DemoSchedule, UniSegTrainerTaskHeads):  # saved under the name nnU-Net's lookup finds
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs
    Mirrored.__name__ = "UniSegTrainerTaskHeads"
    pre = join(nnUNet_preprocessed, dataset)
    trainer = Mirrored(dict(load_json(join(pre, "UniSegPlansCPUDemo.json")), continue_training=False), "3d_fullres", 0,
                       load_json(join(pre, "dataset.json")), torch.device("cpu"))
    trainer.run_training()


def mirrored_summary(runs: list, variants) -> dict:
    """Per member and variant: the median over seeds of each held-out case's Dice against the default."""
    summary = {}
    for run in runs:
        for name in variants:
            for case, labels in run[name]["dice_vs_default"].items():
                for label, value in labels.items():
                    summary.setdefault(run["task"], {}).setdefault(name, {}).setdefault(f"{case} label {label}",
                                                                                     []).append(value)
    return {task: {name: {case: round(statistics.median(v), 4) for case, v in cases.items()}
                   for name, cases in per_variant.items()} for task, per_variant in summary.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ct", default=None, help="a real CT (NIfTI), e.g. TotalSegmentator's example_ct.nii.gz")
    p.add_argument("--task", default="Liver", help="task of the released model (default Liver)")
    p.add_argument("--repeats", type=int, default=2, help="timed tiles per precision (default 2)")
    p.add_argument("--agreement", action="append", default=[], metavar="MODEL_FOLDER=IMAGES",
                   help="a trained model folder and a folder of its test images (repeatable)")
    p.add_argument("--mirrored_from", default=None, metavar="WORKDIR",
                   help="a real_anatomy.py --workdir: train the task-head trainer there with mirroring (demo "
                        "schedule, about 3 min on 2 cores) and add its agreement on the held-out real CT")
    p.add_argument("--mirrored_epochs", type=int, default=50,
                   help="--mirrored_from: epochs of 16 iterations (default the demo's 50 = 800 iterations)")
    p.add_argument("--mirrored_seeds", type=int, nargs="+", default=[0],
                   help="--mirrored_from: one model per seed (default 0); the medians over seeds go to the summary")
    p.add_argument("--skip_released", action="store_true", help="only the agreement part (no --ct needed)")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS),
                   help="agreement variants to run (default: all)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the released architecture and the agreement models predict (default cpu); on cuda "
                        "the default case is measured, not extrapolated, with peak GPU memory")
    p.add_argument("--training", action="store_true",
                   help="also time UniSeg's training step against stock nnU-Net's PlainConvUNet (same plans) in this "
                        "run, with peak memory on CUDA")
    p.add_argument("--training_patch", nargs=3, type=int, default=PAPER["patch_size"],
                   help="--training: patch (default the paper's 64 192 192)")
    p.add_argument("--training_batch", type=int, default=2, help="--training: batch (default the paper's 2)")
    p.add_argument("--training_iters", type=int, default=20, help="--training: timed steps after 10 warm-up steps")
    p.add_argument("--out", default=None)
    p.add_argument("--_child_train", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child_train:
        return _child_train(args._child_train[0], *map(int, args._child_train[1:]))
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer and predictor
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{args.threads} threads")
    if DEVICE.type == "cuda":
        machine += f", {torch.cuda.get_device_name()}"
    with tempfile.TemporaryDirectory() as root:
        result = {"machine": machine, "device": args.device,
                  "released_architecture": None if args.skip_released else
                  released_architecture(args.ct, args.task, args.repeats, root),
                  "agreement": [agreement(*pair.split("=", 1), root, args.variants) for pair in args.agreement]}
        if args.training:
            result["training_step"] = training_step(args.training_patch, args.training_batch, args.training_iters)
        if args.mirrored_from:
            mirrored = []
            for seed in args.mirrored_seeds:
                model = train_mirrored(args.mirrored_from, os.path.join(root, f"mirrored_results_seed{seed}"),
                                       seed=seed, epochs=args.mirrored_epochs, threads=args.threads)
                for member in ("Dataset511_RealLiverCT", "Dataset512_RealSpleenCT"):
                    run = agreement(model, os.path.join(args.mirrored_from, "raw", member, "imagesTs"), root,
                                    args.variants)
                    mirrored.append({**run, "seed": seed, "iterations": args.mirrored_epochs * 16})
            result["agreement"] += mirrored
            result["mirrored_median_over_seeds"] = mirrored_summary(mirrored, args.variants)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
