"""`nnUNetv2_universal_import_uniseg_v1`: the authors' released UniSeg checkpoint as a ready nnU-Net model folder.

    nnUNetv2_universal_import_uniseg_v1 -i model_final_checkpoint.model -d 620 [-n UniSeg11]

writes `$nnUNet_results/Dataset620_UniSeg11/UniSegTrainer__UniSegPlans__3d_fullres/` with `plans.json`,
`dataset.json` (the paper's 11-task registry, `finetuning.uniseg11_tasks`) and `fold_0/checkpoint_final.pth`. The
network is read off the checkpoint's tensor shapes (`v1_checkpoint`); every task's preprocessing is the
reference's (target spacing, CT window, z-score with its mask rule). Then, without nnUNet_raw or
nnUNet_preprocessed, `nnUNetv2_universal_predict -d 620 --task Liver` (or `--all-tasks`, `--list-tasks`) and stock
`nnUNetv2_predict -d 620 -tr UniSegTrainer -p UniSegPlans` with `nnUNet_universal_task` segment raw images, and
`nnUNetv2_universal_transfer_plans -s <that folder>` / `export_backbone` start fine-tuning from it.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile

import torch
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.collection.build import collection_dataset_json
from nnunetv2_universal.collection.plan_and_preprocess import collection_plans, task_settings
from nnunetv2_universal.collection.templates import PAPER
from nnunetv2_universal.finetuning.uniseg11_tasks import PAPER_TASKS, paper_registry
from nnunetv2_universal.finetuning.v1_checkpoint import (architecture_from_weights, map_v1_state_dict,
                                                           network_from_v1_state_dict)
from nnunetv2_universal.finetuning.weights import load_checkpoint_safely, refuse_v2_checkpoint

TRAINER, PLANS, CONFIGURATION = "UniSegTrainer", "UniSegPlans", "3d_fullres"
MIRROR_AXES = (0, 1, 2)  # the reference's test-time mirroring


class V1ImportError(ValueError):
    """The file is not the released UniSeg checkpoint, or the target folder is taken."""


def _v1_state(model_file: str, allow_pickle: bool) -> dict:
    checkpoint = load_checkpoint_safely(model_file, allow_pickle)
    refuse_v2_checkpoint(checkpoint, model_file)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise V1ImportError(f"{model_file}: no weights found (an nnU-Net v1 .model file keeps them under "
                            f"'state_dict'; found keys {sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else []})")
    try:
        mapped = map_v1_state_dict(state)
    except (KeyError, ValueError) as e:
        raise V1ImportError(f"{model_file} is not a UniSeg v1 checkpoint: {str(e).strip(chr(34))}") from None
    if "prompt" not in mapped:
        raise V1ImportError(f"{model_file} is not a UniSeg v1 checkpoint: no 'intermedia_prompt' (the universal "
                            f"prompt); found {len(state)} tensors such as {sorted(state)[:3]}")
    tasks = int(mapped["prompt"].shape[1])
    if tasks != len(PAPER_TASKS):
        raise V1ImportError(f"{model_file}: its universal prompt has {tasks} task channel(s); the released UniSeg "
                            f"model has {len(PAPER_TASKS)} ({', '.join(t.name for t in PAPER_TASKS)})")
    return state


def _arch_template(mapped: dict) -> dict:
    """The `paper` template with the architecture read off the checkpoint (any size, same layout)."""
    arch = architecture_from_weights(mapped)
    template = copy.deepcopy(PAPER)
    kwargs = template["arch_kwargs"]
    for key in ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                "n_conv_per_stage_decoder", "decoder_kernel_sizes", "transpconv_bias", "seg_bias"):
        kwargs[key] = arch[key]
    template["patch_size"] = list(arch["patch_size"])
    return template


def import_uniseg_v1(model_file: str, dataset_id: int, name: str = "UniSeg11", allow_pickle: bool = False,
                     overwrite: bool = False, results: str = None) -> str:
    """Write the model folder; returns its path. Nothing is left behind if a step fails."""
    results = results or os.environ.get("nnUNet_results")
    if not results:
        raise V1ImportError("nnUNet_results is not set: it is where the model folder is written")
    state = _v1_state(model_file, allow_pickle)
    mapped = map_v1_state_dict(state)
    network = network_from_v1_state_dict(state)
    registry = paper_registry()
    stems = list(network.stem.channel_counts)
    if stems != registry.channel_counts or network.num_classes != registry.max_num_classes:
        raise V1ImportError(f"{model_file}: stems for {stems} channels and {network.num_classes} output classes; the "
                            f"11 tasks need stems {registry.channel_counts} and {registry.max_num_classes} classes")
    return write_model_folder(network, _arch_template(mapped), dataset_id, name, results, overwrite,
                              f"UniSeg v1 checkpoint {os.path.basename(model_file)}")


def write_model_folder(network: torch.nn.Module, template: dict, dataset_id: int, name: str, results: str,
                       overwrite: bool = False, source: str = "") -> str:
    """A model folder for the paper's 11 tasks around `network` (built with `template`'s architecture): plans with
    the reference's per-task preprocessing, the registry, fold_0/checkpoint_final.pth. Written atomically."""
    registry = paper_registry()
    dataset_name = f"Dataset{int(dataset_id):03d}_{name}"
    taken = [d for d in os.listdir(results) if d.startswith(f"Dataset{int(dataset_id):03d}_") and d != dataset_name] \
        if os.path.isdir(results) else []
    if taken:
        raise V1ImportError(f"dataset id {dataset_id} is taken in {results} by {taken[0]}; choose another -d")
    target = join(results, dataset_name, f"{TRAINER}__{PLANS}__{CONFIGURATION}")
    if os.path.exists(target) and not overwrite:
        raise V1ImportError(f"{target} exists; pass --overwrite to replace it")

    patch = template["patch_size"]
    settings = {t.name: task_settings(registry.task(t.name), t.spacing, t.use_mask_for_norm, patch, "SimpleITKIO")
                for t in PAPER_TASKS}
    plans = collection_plans(dataset_name, registry, settings, template, CONFIGURATION)
    dataset_json = collection_dataset_json(registry, name, ".nii.gz")
    checkpoint = {"network_weights": network.state_dict(), "trainer_name": TRAINER,
                  "init_args": {"configuration": CONFIGURATION, "fold": 0},
                  "inference_allowed_mirroring_axes": MIRROR_AXES, "current_epoch": 0, "source": source}
    maybe_mkdir_p(join(results, dataset_name))
    staging = tempfile.mkdtemp(prefix=".import.", dir=join(results, dataset_name))
    try:
        save_json(plans, join(staging, "plans.json"), sort_keys=False)
        save_json(dataset_json, join(staging, "dataset.json"), sort_keys=False)
        maybe_mkdir_p(join(staging, "fold_0"))
        torch.save(checkpoint, join(staging, "fold_0", "checkpoint_final.pth"))
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return target


@console_command
def main(argv=None) -> None:
    p = command_parser(description="Import the released UniSeg checkpoint (nnU-Net v1 .model) as an nnU-Net "
                                   "v2 model folder that predicts the paper's 11 tasks.")
    p.add_argument("-i", required=True, help="model_final_checkpoint.model (the authors' release)")
    p.add_argument("-d", required=True, type=int, help="dataset id for the model folder (e.g. 620)")
    p.add_argument("-n", default="UniSeg11", help="dataset name (default UniSeg11)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.add_argument("--allow_pickle", action="store_true",
                   help="allow pickled code while loading: only for a file you trust")
    args = p.parse_args(argv)
    if not os.path.isfile(args.i):
        raise V1ImportError(f"{args.i} does not exist")
    target = import_uniseg_v1(args.i, args.d, args.n, args.allow_pickle, args.overwrite)
    print(f"Model folder written: {target}\n"
          f"Tasks: {', '.join(t.name for t in PAPER_TASKS)}\n"
          f"Predict: nnUNetv2_universal_predict -i IN -o OUT -d {args.d} -tr {TRAINER} -p {PLANS} --task Liver")


if __name__ == "__main__":
    main()
