"""Plan and preprocess a collection with nnU-Net's own fingerprinting, planning rules and preprocessor.

For every member: nnU-Net's fingerprint (skipped if present), nnU-Net's planner rules for the target spacing
(unless the registry fixes it), the use-mask-for-norm rule and the reader; normalisation from the registry (the CT
window becomes CTNormalization with fixed intensity properties). The shared architecture and patch come from a
template. Cases are preprocessed with the member task's plans view straight into the collection's folder, so the
collection looks like any preprocessed nnU-Net dataset: plans, dataset.json (with the registry), splits_final.json,
gt_segmentations/ and one data folder.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p, save_json
from nnunetv2.experiment_planning import verify_dataset_integrity as nnunet_integrity_check
from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities import utils as nnunet_utils
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.json_export import recursive_fix_for_json_export
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.collection.build import load_collection_dataset_json
from nnunetv2_universal.collection.resampling import resample_data_antialiased_to_shape
from nnunetv2_universal.collection.task_plans import TASKS_KEY, TaskView, ct_window_intensity_properties
from nnunetv2_universal.collection.templates import load_template
from nnunetv2_universal.collection.training_data_checks import check_datasets
from nnunetv2_universal.orientation import orientation_counts, training_orientation
from nnunetv2_universal.registry import (COLLECTION_KEY, FIXED_WINDOW_SCHEMES, NORMALIZATION_SCHEMES, TaskRegistry,
                                        TaskSpec)
from nnunetv2_universal.worker_pools import pools_in_process


def whole_slice_spacing(spacing: Sequence[float], shapes, spacings, patch: Sequence[int]) -> List[float]:
    """`spacing` (z, y, x) with y and x coarsened where needed so that the largest in-plane extent of any case
    (shape after cropping x its spacing) fits the 2D patch: every slice is seen whole, in one window."""
    extents = np.max(np.asarray(shapes, float) * np.asarray(spacings, float), 0)
    return [float(spacing[0])] + [max(float(s), float(e) / p) for s, e, p in zip(spacing[1:], extents[1:], patch)]


def _member_settings(task: TaskSpec, member: str, num_processes: int, verify: bool,
                     template_spacing=None, whole_slices_patch=None) -> dict:
    """Per-task preprocessing settings from nnU-Net's fingerprint and planner rules plus the registry (a template's
    spacing, if it has one, wins over both; `whole_slices_patch`: the 2D patch every slice must fit). With one
    worker, nnU-Net's check and fingerprint pools run in this process (worker_pools.py)."""
    spacing = [float(s) for s in (template_spacing or task.spacing or [])] or None
    with pools_in_process(num_processes, fingerprint_extractor, nnunet_integrity_check, nnunet_utils):
        if verify:
            verify_dataset_integrity(join(nnUNet_raw, member), num_processes)
        if not isfile(join(nnUNet_preprocessed, member, "dataset_fingerprint.json")):
            DatasetFingerprintExtractor(member, num_processes, verbose=False).run()
        planner = ExperimentPlanner(member, overwrite_target_spacing=spacing, suppress_transpose=True)
        orientation = training_orientation(member_orientations(member))
    fingerprint = load_json(join(nnUNet_preprocessed, member, "dataset_fingerprint.json"))
    _, use_mask = planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
    target_spacing = [float(s) for s in planner.determine_fullres_target_spacing()]
    if whole_slices_patch is not None:
        target_spacing = whole_slice_spacing(target_spacing, fingerprint["shapes_after_crop"], fingerprint["spacings"],
                                             whole_slices_patch)
    median_shape = np.median(fingerprint["shapes_after_crop"], 0)
    median_spacing = np.median(fingerprint["spacings"], 0)
    median_resampled = [int(round(s * o / t)) for s, o, t in zip(median_shape, median_spacing, target_spacing)]
    return task_settings(task, target_spacing, use_mask, median_resampled, planner.determine_reader_writer().__name__,
                         fingerprint["foreground_intensity_properties_per_channel"], orientation)


def with_template_normalization(task: TaskSpec, template: dict) -> TaskSpec:
    """The task as the template normalises it (Hermes' reference): with `ct_clip_zscore: [low, high]` every channel
    on the registry's fixed CT window is clipped to [low, high] and z-scored per image instead; with
    `zscore_clip_p2_p98: true` every z-scored channel (MR, PET) is first clipped to the image's 2nd / 98th
    percentiles."""
    window = template.get("ct_clip_zscore")
    replace = {"ct_window": "ct_clip_zscore"} if window else {}
    if template.get("zscore_clip_p2_p98"):
        replace["zscore"] = "zscore_p2_p98"
    if not set(replace) & set(task.normalization):
        return task
    changes = {"normalization": [replace.get(s, s) for s in task.normalization]}
    if window:
        changes["ct_window"] = [float(v) for v in window]
    return dataclasses.replace(task, **changes)


def member_orientations(member: str) -> Counter:
    """How many of a member's training cases are stored in each orientation (first channel, headers only)."""
    raw = join(nnUNet_raw, member)
    files = get_filenames_of_train_images_and_targets(raw, load_json(join(raw, "dataset.json")))
    return orientation_counts(entry["images"][0] for entry in files.values())


def task_settings(task: TaskSpec, spacing, use_mask_for_norm, median_size, reader: str,
                  channel_intensities: Optional[dict] = None, orientation: Optional[str] = None) -> dict:
    """One task's entry under `universal_tasks`: spacing, normalisation (the mask rule only where the scheme zeroes
    the outside, z-score, as nnU-Net's planner), intensity properties (fixed for the CT window; from the
    fingerprint otherwise, which z-score does not read), reader, modalities, structures and the training
    orientation (None: unknown, inputs are used as stored)."""
    schemes = [NORMALIZATION_SCHEMES[s] for s in task.normalization]
    use_mask = [bool(m) and s == "zscore" for m, s in zip(use_mask_for_norm, task.normalization)]
    intensities = {}
    for c, scheme in enumerate(task.normalization):
        if scheme in FIXED_WINDOW_SCHEMES:
            intensities[str(c)] = ct_window_intensity_properties(*task.ct_window)
        elif channel_intensities is not None:
            intensities[str(c)] = channel_intensities[str(c)]
        else:
            intensities[str(c)] = {"mean": 0.0, "std": 1.0, "median": 0.0, "min": 0.0, "max": 0.0,
                                   "percentile_00_5": 0.0, "percentile_99_5": 0.0}
    return {"num_classes": task.num_classes, "spacing": [float(s) for s in spacing],
            "normalization_schemes": schemes, "use_mask_for_norm": use_mask,
            "median_image_size_in_voxels": [int(s) for s in median_size],
            "foreground_intensity_properties_per_channel": intensities, "image_reader_writer": reader,
            "modalities": task.modalities, "main_modality": task.main_modality,
            "structures": task.structure_keys(), "orientation": orientation}


def plan_collection(collection: Union[int, str], template: str = "paper", configuration: str = "3d_fullres",
                    num_processes: int = 1, verify: bool = False) -> dict:
    """Write the collection's plans, dataset.json, splits and fingerprint to nnUNet_preprocessed; return the plans."""
    name = maybe_convert_to_dataset_name(collection)
    dataset_json = load_collection_dataset_json(name)
    registry = TaskRegistry.from_dataset_json(dataset_json)
    members = dataset_json[COLLECTION_KEY]["members"]
    tmpl = load_template(template)

    whole_slices = list(tmpl["patch_size"]) if tmpl.get("whole_slices") else None
    if whole_slices is not None and len(whole_slices) != 2:
        raise ValueError(f"template {tmpl['plans_name']}: whole_slices needs a 2D patch (-c 2d), got "
                         f"{whole_slices}")
    # every member's files, headers and label values first: bad data stop here, before anything is written
    check_datasets(join(nnUNet_raw, members[t.name]["dataset"]) for t in registry)
    settings = {t.name: _member_settings(with_template_normalization(t, tmpl), members[t.name]["dataset"],
                                         num_processes, verify, tmpl.get("spacing"), whole_slices) for t in registry}
    plans = collection_plans(name, registry, settings, tmpl, configuration)
    out = join(nnUNet_preprocessed, name)
    maybe_mkdir_p(out)
    save_json(plans, join(out, f"{plans['plans_name']}.json"), sort_keys=False)
    save_json(dataset_json, join(out, "dataset.json"), sort_keys=False)
    save_json(collection_splits(registry, members), join(out, "splits_final.json"), sort_keys=False)
    save_json({"members": {t: load_json(join(nnUNet_preprocessed, m["dataset"], "dataset_fingerprint.json"))
                           for t, m in members.items()}},
              join(out, "dataset_fingerprint.json"), sort_keys=False)
    return plans


def collection_plans(dataset_name: str, registry: TaskRegistry, settings: Dict[str, dict], template: dict,
                     configuration: str = "3d_fullres") -> dict:
    """nnU-Net plans for a collection: the template's network, patch and batch; every task's own settings under
    `universal_tasks` (the configuration's top level holds the first task's, for tools that read only those)."""
    resampling_data, data_kwargs, resampling_seg, seg_kwargs = ExperimentPlanner.determine_resampling(None)
    resampling_prob, prob_kwargs = ExperimentPlanner.determine_segmentation_softmax_export_fn(None)
    first = settings[registry.names[0]]
    arch_kwargs = dict(template["arch_kwargs"])
    arch_kwargs.update({"num_tasks": len(registry), "patch_size": list(template["patch_size"]),
                        "stem_channels": registry.channel_counts})
    plans_name = template["plans_name"]
    config = {
        "data_identifier": f"{plans_name}_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(template["batch_size"]),
        "patch_size": list(template["patch_size"]),
        "median_image_size_in_voxels": first["median_image_size_in_voxels"],
        "spacing": first["spacing"],
        "normalization_schemes": first["normalization_schemes"],
        "use_mask_for_norm": first["use_mask_for_norm"],
        # template `antialias`: images are smoothed before they are downsampled (collection/resampling.py)
        "resampling_fn_data": (resample_data_antialiased_to_shape if template.get("antialias") else
                               resampling_data).__name__,
        "resampling_fn_seg": resampling_seg.__name__,
        "resampling_fn_data_kwargs": data_kwargs,
        "resampling_fn_seg_kwargs": seg_kwargs,
        "resampling_fn_probabilities": resampling_prob.__name__,
        "resampling_fn_probabilities_kwargs": prob_kwargs,
        "architecture": {"network_class_name": template["network_class_name"], "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": list(template["_kw_requires_import"])},
        "batch_dice": bool(template.get("batch_dice", False)),
        TASKS_KEY: settings,
    }
    plans = {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": first["spacing"],
        "original_median_shape_after_transp": first["median_image_size_in_voxels"],
        "image_reader_writer": first["image_reader_writer"],
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {configuration: config},
        "experiment_planner_used": "nnunetv2_universal collection planner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": first["foreground_intensity_properties_per_channel"],
    }
    recursive_fix_for_json_export(plans)
    return plans


def collection_splits(registry: TaskRegistry, members: Dict[str, dict]) -> List[dict]:
    """Fold k of the collection = fold k of every member (members' own, possibly patient-grouped, splits)."""
    per_member = []
    for task in registry.names:
        member = members[task]["dataset"]
        to_collection = {v: k for k, v in members[task]["cases"].items()}
        splits_file = next((f for f in (join(nnUNet_preprocessed, member, "splits_final.json"),
                                        join(nnUNet_raw, member, "splits_final.json")) if isfile(f)), None)
        if splits_file is not None:
            splits = load_json(splits_file)
        else:  # nnU-Net's default: seeded 5-fold CV (fewer folds for tiny members)
            if len(to_collection) < 2:
                raise ValueError(f"{member} has {len(to_collection)} training case(s); at least 2 are needed for a "
                                 f"train/validation split (or provide its splits_final.json)")
            splits = generate_crossval_split(sorted(to_collection), seed=12345, n_splits=min(5, len(to_collection)))
        for fold in splits:
            unknown = [c for c in fold["train"] + fold["val"] if c not in to_collection]
            if unknown:
                raise ValueError(f"{member}: splits_final.json names cases without training data: {unknown[:5]}")
        per_member.append([{part: [to_collection[c] for c in fold[part]] for part in ("train", "val")}
                           for fold in splits])
    n_folds = min(len(s) for s in per_member)
    return [{part: sorted(c for s in per_member for c in s[fold][part]) for part in ("train", "val")}
            for fold in range(n_folds)]


def _preprocess_one(view_args, output_truncated, images, label):
    # Runs in worker processes: rebuild the task view there (cheap) instead of pickling managers.
    view = TaskView(*view_args)
    preprocessor = view.configuration_manager.preprocessor_class(verbose=False)  # the plugin's (normalization.py)
    preprocessor.run_case_save(output_truncated, images, label, view.plans_manager, view.configuration_manager,
                               view.dataset_json)


def preprocess_collection(collection: Union[int, str], plans_name: str, configuration: str = "3d_fullres",
                          num_processes: int = 1, progress: bool = True) -> str:
    """Preprocess every member case with its task's plans view into the collection's data folder."""
    name = maybe_convert_to_dataset_name(collection)
    base = join(nnUNet_preprocessed, name)
    plans = load_json(join(base, f"{plans_name}.json"))
    dataset_json = load_json(join(base, "dataset.json"))
    registry = TaskRegistry.from_dataset_json(dataset_json)
    members = dataset_json[COLLECTION_KEY]["members"]
    data_folder = join(base, plans["configurations"][configuration]["data_identifier"])
    staging = tempfile.mkdtemp(prefix=".preprocessing.", dir=base)
    gt_staging = join(staging, "gt_segmentations")
    maybe_mkdir_p(gt_staging)
    jobs = []
    for task in registry.names:
        member = members[task]["dataset"]
        with pools_in_process(num_processes, nnunet_utils):
            files = get_filenames_of_train_images_and_targets(join(nnUNet_raw, member),
                                                              load_json(join(nnUNet_raw, member, "dataset.json")))
        for cid, member_case in members[task]["cases"].items():
            entry = files[member_case]
            jobs.append(((plans, dataset_json, registry, task, configuration), join(staging, cid),
                         entry["images"], entry["label"]))
            shutil.copy(entry["label"], join(gt_staging, cid + dataset_json["file_ending"]))
    try:
        with tqdm(total=len(jobs), desc=f"Preprocessing {name}", disable=not progress) as bar:
            if num_processes <= 1:
                for job in jobs:
                    _preprocess_one(*job)
                    bar.update()
            else:
                with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                    for _ in pool.starmap(_preprocess_one, jobs, chunksize=1):
                        bar.update()
        for old in (data_folder, join(base, "gt_segmentations")):
            if os.path.isdir(old):
                shutil.rmtree(old)
        shutil.move(gt_staging, join(base, "gt_segmentations"))
        os.replace(staging, data_folder)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return data_folder


@console_command
def main(argv=None):
    parser = command_parser(description="Fingerprint, plan and preprocess a universal collection "
                                        "(each member with its own spacing and normalisation).")
    parser.add_argument("-d", nargs="+", required=True, help="collection dataset id(s) or name(s)")
    parser.add_argument("-pl", default="paper",
                        help="plans template: 'paper' (UniSeg, 64x192x192), 'hermes' (Hermes-R, 128^3 at 1.5 mm), "
                             "'cpu_demo', or a JSON file (see plans/ in the repository). Default: paper")
    parser.add_argument("-c", default="3d_fullres", help="configuration name (default 3d_fullres)")
    parser.add_argument("-np", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 1)),
                        help="worker processes for fingerprinting and preprocessing (nnUNet_def_n_proc, else 1)")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="also run nnU-Net's integrity check (slow; files, label values and NaN are checked always)")
    parser.add_argument("--no_pbar", action="store_true", help="no progress bar while preprocessing")
    parser.add_argument("--plan_only", action="store_true", help="write plans, do not preprocess")
    args = parser.parse_args(argv)
    for collection in args.d:
        plans = plan_collection(collection, args.pl, args.c, args.np, args.verify_dataset_integrity)
        print(f"Plans written: {join(nnUNet_preprocessed, plans['dataset_name'], plans['plans_name'] + '.json')}")
        if not args.plan_only:
            folder = preprocess_collection(collection, plans["plans_name"], args.c, args.np, not args.no_pbar)
            print(f"Preprocessed data: {folder}")


if __name__ == "__main__":
    main()
