"""`nnUNetv2_universal_predict`: nnUNetv2_predict's flags plus the choice of task(s).

    nnUNetv2_universal_predict -i IN -o OUT -d 900 -c 3d_fullres -tr UniSegTrainer -p UniSegPlans -f 0 --task NAME
    nnUNetv2_universal_predict ... --all-tasks [--modality CT | --any-modality] [--priority A B ...]
    nnUNetv2_universal_predict -d 900 -tr UniSegTrainer -p UniSegPlans -c 3d_fullres --list-tasks
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from typing import Optional, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json, maybe_mkdir_p
from nnunetv2.utilities.file_path_utilities import get_output_folder

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.cli import ensure_trainer_folder_on_path
from nnunetv2_universal.devices import cpu_has_native_bf16, usable_device
from nnunetv2_universal.inference.input_checks import (PredictionInputError, check_channel_counts, check_input_folder,
                                                       check_output_folder_empty, check_request)
from nnunetv2_universal.inference.predictor import UniversalPredictor, write_global_labels
from nnunetv2_universal.registry import TaskRegistry


def _parser() -> argparse.ArgumentParser:
    p = command_parser(description="Predict with a universal model: one task (--task) or all compatible "
                                   "tasks merged into one label map (--all-tasks).")
    p.add_argument("-i", help="input folder (files CASE_XXXX<ending>, as for nnUNetv2_predict)")
    p.add_argument("-o", help="output folder")
    p.add_argument("-d", required=True, help="collection dataset id or name")
    p.add_argument("-p", default="UniSegPlans", help="plans identifier (default UniSegPlans)")
    p.add_argument("-tr", default="UniSegTrainer", help="trainer (default UniSegTrainer)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-f", nargs="+", default=["0"], help="folds (default 0)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--task", help="task name from the model's registry (see --list-tasks)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="with --task: predict only these of its labels (names); Hermes computes only their priors")
    choice.add_argument("--all-tasks", action="store_true",
                        help="every task whose input matches the image's channels; one merged label map")
    choice.add_argument("--list-tasks", action="store_true", help="print the model's tasks and exit")
    p.add_argument("--modality", nargs="+", default=None,
                   help="with --all-tasks: only tasks whose channel modalities are these (e.g. CT); default: CT "
                        "tasks for images in Hounsfield units, the other tasks for other images")
    p.add_argument("--any-modality", action="store_true",
                   help="with --all-tasks: every task with the image's channel count, whatever its modality")
    p.add_argument("--tasks", nargs="+", default=None, help="with --all-tasks: restrict to these tasks")
    p.add_argument("--priority", nargs="+", default=None,
                   help="with --all-tasks: paste order (later wins where tasks overlap); default registry order")
    p.add_argument("--no_reorient", action="store_true",
                   help="feed images as stored (default: each is brought to its task's training orientation by a "
                        "lossless axis flip/permutation and the result written back in the input's geometry)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --all-tasks: write into an output folder that already holds segmentations or "
                        "labels.json (refused otherwise; --task overwrites as nnUNetv2_predict does)")
    p.add_argument("-step_size", type=float, default=0.5,
                   help="sliding-window step as a fraction of the patch (larger: fewer tiles, faster, but tile borders "
                        "then change the answer; see docs/performance.md)")
    p.add_argument("-mirror_axes", type=int, nargs="+", default=None,
                   help="test-time mirroring over these axes only (0 1 2 = the z y x axes of the image in its task's "
                        "training orientation; a subset of the model's mirroring axes): 2^n network passes per tile "
                        "instead of 2^3 (default: every axis the model was trained to mirror; no mirroring with "
                        "--fast / --disable_tta)")
    p.add_argument("--antialias", action="store_true",
                   help="smooth each input image before downsampling it to the task's spacing (Gaussian, sigma = "
                        "(factor - 1) / 2 voxels per axis); for inputs much finer than the images the model was "
                        "trained on (docs/explanation/learning-the-condition.md)")
    p.add_argument("--uniform_tiles", action="store_true",
                   help="average overlapping tiles with equal weights instead of nnU-Net's Gaussian (Hermes' reference "
                        "inference)")
    p.add_argument("--disable_tta", action="store_true",
                   help="no mirroring test-time augmentation (up to 8x faster in 3D, slightly less accurate)")
    p.add_argument("--cpu_bf16", action="store_true",
                   help="bfloat16 autocast on the CPU (nnU-Net autocasts on CUDA only); pays off only on CPUs with "
                        "bf16 in hardware (AVX512-BF16, AMX), elsewhere it is slower")
    p.add_argument("--fast", action="store_true",
                   help="prediction a person can wait for on a CPU: --disable_tta --tile_mirroring, plus --cpu_bf16 "
                        "where the CPU has bf16 in hardware; time and agreement with the default: "
                        "docs/performance.md")
    p.add_argument("--tile_mirroring", action="store_true",
                   help="with --fast / --disable_tta, for a model trained with mirroring: still one network pass per "
                        "tile, but each tile mirrored by its place (neighbouring tiles differently), so overlapping "
                        "tiles average different mirrorings; agreement with the default: docs/performance.md")
    p.add_argument("--verbose", action="store_true", help="nnU-Net's verbose predictor output")
    p.add_argument("--save_probabilities", action="store_true", help="(--task only)")
    p.add_argument("--continue_prediction", action="store_true", help="(--task only)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name in each fold folder")
    p.add_argument("-npp", type=int, default=_env_int("nnUNet_npp"),
                   help="--task: preprocessing worker processes (default nnUNet_npp; unset: none on a CPU or for one "
                        "case, where a worker only adds its start-up, else 3; -npp 0 -nps 0: all in this process)")
    p.add_argument("-nps", type=int, default=_env_int("nnUNet_nps"),
                   help="--task: segmentation export worker processes (default nnUNet_nps; unset: as -npp)")
    p.add_argument("-device", default="cuda", choices=["cuda", "cpu", "mps"],
                   help="device; cuda without a GPU falls back to the CPU with a notice")
    p.add_argument("--disable_progress_bar", action="store_true", help="no progress bars")
    p.add_argument("--not_on_device", action="store_true",
                   help="keep the sliding-window result in CPU memory (large images on a small GPU)")
    return p


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def prediction_workers(npp: Optional[int], nps: Optional[int], device_type: str, num_cases: int) -> Tuple[int, int]:
    """(-npp, -nps) as given; both unset: none on a CPU or for a single case, else nnU-Net's 3 each. A worker is a
    spawned interpreter that imports torch and nnU-Net again (on the 2-core machine about 20 s more per call of
    one small case, docs/performance.md); it pays only when it overlaps a GPU's work on other cases, while on a
    CPU it competes with the network for the same cores."""
    if npp is None and nps is None:
        return (0, 0) if device_type == "cpu" or num_cases <= 1 else (3, 3)
    return (3 if npp is None else npp, 3 if nps is None else nps)


def _model_folder(args) -> str:
    """The model folder, or an error that lists the trained model folders of the dataset."""
    model_folder = get_output_folder(args.d, args.tr, args.p, args.c)
    if not os.path.isfile(join(model_folder, "dataset.json")):
        parent = os.path.dirname(model_folder)
        found = sorted(d for d in os.listdir(parent) if "__" in d) if os.path.isdir(parent) else []
        hint = (f"trained model folders there: {', '.join(found)} (choose with -tr TRAINER -p PLANS -c CONFIGURATION)"
                if found else "no trained model folders there")
        raise PredictionInputError(f"no model folder {model_folder}; {hint}")
    return model_folder


def predictor_settings(args) -> dict:
    """What nnU-Net's predictor gets from the flags. --fast = --disable_tta --tile_mirroring, and --cpu_bf16 where the
    CPU has bf16 in hardware; the step stays (fewer tiles changed the answer too much, docs/performance.md)."""
    return {"tile_step_size": args.step_size, "use_mirroring": not (args.disable_tta or args.fast),
            "use_gaussian": not args.uniform_tiles,
            "cpu_bf16": bool(args.cpu_bf16 or (args.fast and cpu_has_native_bf16())), "antialias": args.antialias,
            "tile_mirroring": bool(args.tile_mirroring or args.fast)}


def fast_notice(trained_mirroring_axes) -> Optional[str]:
    """--fast on a model trained with mirroring: the answer changes; say by how much and what lies in between."""
    if not trained_mirroring_axes:
        return None  # trained without mirroring: --fast predicts what the default predicts
    return (f"--fast: this model was trained mirroring over axes {list(trained_mirroring_axes)}; with one mirroring "
            "per tile instead of 8 per tile its answer changes (median Dice 0.85 to 0.95 against the default on the "
            "real-CT benchmark's models, docs/performance.md); -mirror_axes 2 or -mirror_axes 1 2 instead of --fast "
            "runs 2 or 4 of the 8 passes")


def mirror_axes_subset(trained, requested) -> tuple:
    """The requested mirroring axes, which must be axes the model was trained to mirror."""
    trained = tuple(trained or ())
    unknown = sorted(set(requested) - set(trained))
    if unknown:
        raise PredictionInputError(f"-mirror_axes {' '.join(map(str, requested))}: the model mirrors over "
                                   f"{list(trained) or 'no axes'} only (it was trained so); axes {unknown} are not "
                                   f"among them")
    return tuple(sorted(set(requested)))


@console_command
def main(argv=None):
    args = _parser().parse_args(argv)
    model_folder = _model_folder(args)
    if args.list_tasks:
        registry = TaskRegistry.from_dataset_json(load_json(join(model_folder, "dataset.json")))
        for i, t in enumerate(registry):
            print(f"{i:3d}  {t.name:24s} channels={t.modalities} labels={t.foreground_labels}  {t.description}")
        return
    if not args.i or not args.o:
        raise PredictionInputError("-i and -o are required unless --list-tasks is given")
    if args.labels and not args.task:
        raise PredictionInputError("--labels needs --task")
    if not args.task and not args.all_tasks:
        raise PredictionInputError("choose --task NAME or --all-tasks (list the tasks with --list-tasks)")
    dataset_json = load_json(join(model_folder, "dataset.json"))
    # before the model is loaded: nothing is written unless every case can be predicted
    registry = TaskRegistry.from_dataset_json(dataset_json)
    spec = check_request(registry, args.task, args.labels, args.modality, list(args.tasks or []) +
                         list(args.priority or []))
    cases = check_input_folder(args.i, dataset_json["file_ending"], spec,
                               [spec] if args.task else [registry.task(t) for t in args.tasks or registry.names])
    if args.all_tasks:
        check_channel_counts(cases, dataset_json["file_ending"], registry)
        if not args.overwrite:
            check_output_folder_empty(args.o, dataset_json["file_ending"])
    ensure_trainer_folder_on_path()
    device = usable_device(args.device, "predicting")
    if device.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif device.type == "cuda":
        torch.set_num_threads(1)
    settings = predictor_settings(args)
    predictor = UniversalPredictor(tile_step_size=settings["tile_step_size"], use_gaussian=settings["use_gaussian"],
                                   use_mirroring=settings["use_mirroring"],
                                   perform_everything_on_device=not args.not_on_device,
                                   device=device, verbose=args.verbose,
                                   allow_tqdm=not args.disable_progress_bar)
    predictor.reorient = not args.no_reorient
    predictor.cpu_bf16 = settings["cpu_bf16"]
    predictor.antialias = settings["antialias"]
    predictor.tile_mirroring = settings["tile_mirroring"]
    if args.fast:
        print(f"--fast: one pass per tile (tiles mirrored in turn), "
              f"{'bfloat16' if settings['cpu_bf16'] else 'float32 (no bf16 in this CPU)'}"
              f"{' on the CPU' if device.type == 'cpu' else ''}, step size {settings['tile_step_size']}",
              file=sys.stderr)
    folds = [f if f == "all" else int(f) for f in args.f]
    predictor.initialize_from_trained_model_folder(model_folder, folds, args.chk)
    notice = fast_notice(predictor.allowed_mirroring_axes) if args.fast else None
    if notice:
        print(notice, file=sys.stderr)
    if args.mirror_axes is not None and predictor.use_mirroring:
        predictor.allowed_mirroring_axes = mirror_axes_subset(predictor.allowed_mirroring_axes, args.mirror_axes)
    maybe_mkdir_p(args.o)
    if args.task:
        predictor.select_task(args.task, args.labels)
        npp, nps = prediction_workers(args.npp, args.nps, device.type, len(cases))
        if npp == 0 and nps == 0:  # nnUNetv2_predict's sequential mode
            predictor.predict_from_files_sequential(args.i, args.o, save_probabilities=args.save_probabilities,
                                                    overwrite=not args.continue_prediction)
        else:
            predictor.predict_from_files(args.i, args.o, save_probabilities=args.save_probabilities,
                                         overwrite=not args.continue_prediction,
                                         num_processes_preprocessing=npp, num_processes_segmentation_export=nps)
        return
    lists, outputs, _ = predictor._manage_input_and_output_lists(args.i, args.o)
    labels = predictor.predict_all_tasks(lists, outputs, tasks=args.tasks, modalities=args.modality,
                                         priority=args.priority, any_modality=args.any_modality)
    print(f"Global labels written to {write_global_labels(labels, args.o)}")


if __name__ == "__main__":
    main()
