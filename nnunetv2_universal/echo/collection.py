"""The echo collection: one ordinary nnU-Net dataset made of the converted echo datasets, and its plans.

`nnUNetv2_universal_build_echo_collection -d 630 631 632 -o 660 -n EchoUniversal` merges CAMUS, EchoNet-Dynamic
and EchoNet-Pediatric (all share labels, channel and case-id prefixes) into nnUNet_raw/Dataset660_EchoUniversal:
images and labels are hard-linked (copied across file systems), `echo_case_metadata` is merged, fold k of the
collection is the union of the members' fold k (official splits), test cases stay in imagesTs/labelsTs.

`nnUNetv2_universal_plan_echo -d 660 [-pl echo|FILE]` runs nnU-Net's fingerprint and planner (which also writes
stock nnUNetPlans, the baseline) and derives the template plans (patch, batch, echo network) from nnU-Net's
3d_fullres configuration (spacing, normalisation, resampling), then preprocesses with nnU-Net's preprocessor.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Dict, List, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p, save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, maybe_convert_to_dataset_name
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.collection.training_data_checks import check_datasets
from nnunetv2_universal.collection.templates import ECHO_NETWORK, load_template
from nnunetv2_universal.echo.metadata import ECHO_CLASSES, ECHO_LABELS, ECHO_REGIONS_CLASS_ORDER, ECHO_VIEWS

SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _member_splits(folder: str, cases: Sequence[str]) -> List[dict]:
    splits_file = join(folder, "splits_final.json")
    if not isfile(splits_file):
        raise FileNotFoundError(f"{splits_file} is missing: the echo converters write the official split there")
    splits = load_json(splits_file)
    unknown = sorted({c for s in splits for c in s["train"] + s["val"]} - set(cases))
    if unknown:
        raise ValueError(f"{splits_file} names cases that are not in imagesTr: {unknown[:5]}")
    return splits


def build_echo_collection(members: Sequence[Union[int, str]], collection_id: int, name: str,
                          overwrite: bool = False) -> str:
    """Merge converted echo datasets into Dataset<collection_id>_<name>; returns the dataset name."""
    if not nnUNet_raw.is_set():
        raise RuntimeError("nnUNet_raw is not set")
    raw = os.fspath(nnUNet_raw)
    target_name = f"Dataset{int(collection_id):03d}_{name}"
    existing = [d for d in os.listdir(raw) if d.startswith(f"Dataset{int(collection_id):03d}_")]
    if existing and not overwrite:
        raise FileExistsError(f"dataset id {collection_id} already exists in nnUNet_raw ({existing[0]}); pass "
                              f"--overwrite to replace it")
    if not members:
        raise ValueError("an echo collection needs at least one member dataset (-d)")
    staging = tempfile.mkdtemp(prefix=f".{target_name}.", dir=raw)
    try:
        metadata: Dict[str, dict] = {}
        member_splits, num_training = [], 0
        for member in members:
            member_name = maybe_convert_to_dataset_name(member)
            folder = join(raw, member_name)
            dataset_json = load_json(join(folder, "dataset.json"))
            if dataset_json.get("labels") != ECHO_LABELS or "echo_case_metadata" not in dataset_json:
                raise ValueError(f"{member_name} is not an echo dataset (labels {dataset_json.get('labels')}, "
                                 f"expected {ECHO_LABELS} and echo_case_metadata): convert it with an echo converter")
            clash = sorted(set(metadata) & set(dataset_json["echo_case_metadata"]))
            if clash:
                raise ValueError(f"{member_name}: case ids already present in another member: {clash[:5]}")
            metadata.update(dataset_json["echo_case_metadata"])
            for sub in SUBFOLDERS:
                if not os.path.isdir(join(folder, sub)):
                    continue
                maybe_mkdir_p(join(staging, sub))
                for f in sorted(os.listdir(join(folder, sub))):
                    if not f.startswith("."):
                        _link_or_copy(join(folder, sub, f), join(staging, sub, f))
            training = [c for c, m in dataset_json["echo_case_metadata"].items() if m.get("split") != "test"]
            num_training += dataset_json["numTraining"]
            member_splits.append(_member_splits(folder, training))
        n_folds = min(len(s) for s in member_splits)
        splits = [{part: sorted(c for s in member_splits for c in s[fold][part]) for part in ("train", "val")}
                  for fold in range(n_folds)]
        save_json(splits, join(staging, "splits_final.json"), sort_keys=False)
        generate_dataset_json(staging, {0: "US"}, ECHO_LABELS, num_training, ".nii.gz",
                              regions_class_order=ECHO_REGIONS_CLASS_ORDER, dataset_name=name,
                              description=f"Echo collection of {', '.join(map(str, members))}",
                              overwrite_image_reader_writer="SimpleITKIO", echo_views=ECHO_VIEWS,
                              echo_classes=ECHO_CLASSES, echo_case_metadata=metadata)
        for old in existing:
            shutil.rmtree(join(raw, old))
        os.replace(staging, join(raw, target_name))
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return target_name


def echo_plans(stock_plans: dict, template: dict, configuration: str = "3d_fullres") -> dict:
    """The template's plans on top of nnU-Net's planned configuration (spacing, normalisation, resampling)."""
    if configuration not in stock_plans["configurations"]:
        raise ValueError(f"nnU-Net planned no {configuration!r} configuration for {stock_plans['dataset_name']}")
    if template["network_class_name"] != ECHO_NETWORK:
        raise ValueError(f"template {template['plans_name']} is not an echo template "
                         f"({template['network_class_name']})")
    plans = copy.deepcopy(stock_plans)
    config = plans["configurations"][configuration]
    config.update({"data_identifier": f"{template['plans_name']}_{configuration}",
                   "batch_size": int(template["batch_size"]), "patch_size": list(template["patch_size"]),
                   "batch_dice": bool(template.get("batch_dice", False)),
                   "architecture": {"network_class_name": template["network_class_name"],
                                    "arch_kwargs": copy.deepcopy(template["arch_kwargs"]),
                                    "_kw_requires_import": list(template["_kw_requires_import"])}})
    plans["configurations"] = {configuration: config}
    plans["plans_name"] = template["plans_name"]
    plans["experiment_planner_used"] = "nnunetv2_universal echo planner (nnU-Net ExperimentPlanner + template)"
    recursive_fix_for_json_export(plans)
    return plans


def plan_echo(dataset: Union[int, str], template: str = "echo", num_processes: int = 1, verify: bool = False,
              preprocess: bool = True) -> dict:
    name = maybe_convert_to_dataset_name(dataset)
    dataset_id = convert_dataset_name_to_id(name)
    check_datasets([join(nnUNet_raw, name)])  # files, label values, NaN: before anything is written
    if not isfile(join(nnUNet_preprocessed, name, "dataset_fingerprint.json")):
        extract_fingerprint_dataset(dataset_id, num_processes=num_processes, check_dataset_integrity=verify,
                                    verbose=False)
    tmpl = load_template(template)
    planner = ExperimentPlanner(name, suppress_transpose=True)  # keep time as the first axis
    planner.plan_experiment()
    plans = echo_plans(load_json(join(nnUNet_preprocessed, name, "nnUNetPlans.json")), tmpl)
    out = join(nnUNet_preprocessed, name)
    save_json(plans, join(out, f"{plans['plans_name']}.json"), sort_keys=False)
    raw_splits = join(nnUNet_raw, name, "splits_final.json")
    if isfile(raw_splits):
        shutil.copy(raw_splits, join(out, "splits_final.json"))
    if preprocess:
        preprocess_dataset(dataset_id, plans["plans_name"], ["3d_fullres"], [num_processes], verbose=False)
    return plans


@console_command
def build_main(argv=None):
    parser = command_parser(description="Merge converted echo datasets (CAMUS, EchoNet-Dynamic, "
                                        "EchoNet-Pediatric) into one nnU-Net dataset.")
    parser.add_argument("-d", nargs="+", required=True, help="member dataset ids or names")
    parser.add_argument("-o", type=int, required=True, help="dataset id of the collection")
    parser.add_argument("-n", default="EchoUniversal", help="collection name (default EchoUniversal)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    args = parser.parse_args(argv)
    name = build_echo_collection(args.d, args.o, args.n, args.overwrite)
    print(f"Echo collection written: {join(nnUNet_raw, name)}")


@console_command
def plan_main(argv=None):
    parser = command_parser(description="Fingerprint, plan (nnU-Net planner + echo template) and "
                                        "preprocess an echo collection.")
    parser.add_argument("-d", nargs="+", required=True, help="dataset id(s) or name(s)")
    parser.add_argument("-pl", default="echo", help="plans template: 'echo' (16x224x224, batch 5) or a JSON file")
    parser.add_argument("-np", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 1)),
                        help="worker processes for fingerprinting and preprocessing (nnUNet_def_n_proc, else 1)")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="also run nnU-Net's dataset integrity check (slow: reads every file)")
    parser.add_argument("--plan_only", action="store_true", help="write plans, do not preprocess")
    args = parser.parse_args(argv)
    for dataset in args.d:
        plans = plan_echo(dataset, args.pl, args.np, args.verify_dataset_integrity, not args.plan_only)
        print(f"Plans written: {join(nnUNet_preprocessed, plans['dataset_name'], plans['plans_name'] + '.json')}")


if __name__ == "__main__":
    build_main()
