"""Define a collection: one nnU-Net dataset id that stands for several converted member datasets (one task each).

`nnUNetv2_universal_build_collection -d 11 12 13 -o 900 -n UniSeg11` writes `nnUNet_raw/Dataset900_UniSeg11/
dataset.json` holding the task registry (one entry per member, from the member's `universal_task` entry or derived
from its channel names and labels), the explicit case table (collection case id -> task, and -> member case) and
the members. No images are copied; `nnUNetv2_universal_plan_and_preprocess -d 900` does the rest.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict, Mapping, Optional, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import join, load_json, save_json
from nnunetv2.paths import nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.collection.training_data_checks import check_training_data
from nnunetv2_universal.orientation import orientation_counts, orientation_report
from nnunetv2_universal.registry import COLLECTION_KEY, MEMBER_KEY, TaskRegistry, TaskSpec

CASE_SEPARATOR = "__"


def collection_case_id(task: str, member_case: str) -> str:
    """Unique, readable id of a member case inside a collection (never parsed back: the case table is explicit)."""
    return f"{task}{CASE_SEPARATOR}{member_case}"


def _require_raw() -> str:
    if not nnUNet_raw.is_set():
        raise RuntimeError("nnUNet_raw is not set; export nnUNet_raw, nnUNet_preprocessed and nnUNet_results first")
    return os.fspath(nnUNet_raw)


def build_collection(members: Sequence[Union[int, str]], collection_id: int, name: str,
                     task_overrides: Optional[Mapping[str, Mapping]] = None, overwrite: bool = False) -> str:
    """Write the collection's raw dataset.json; returns the collection's dataset name."""
    raw = _require_raw()
    if not members:
        raise ValueError("a collection needs at least one member dataset (-d)")
    target_name = f"Dataset{int(collection_id):03d}_{name}"
    target = join(raw, target_name)
    existing = [d for d in os.listdir(raw) if d.startswith(f"Dataset{int(collection_id):03d}_")]
    if existing and not overwrite:
        raise FileExistsError(f"dataset id {collection_id} already exists in nnUNet_raw ({existing[0]}); "
                              f"pass --overwrite to replace it")
    task_overrides = dict(task_overrides or {})

    tasks, cases, member_table, endings, orientations = [], {}, {}, {}, {}
    for member in members:
        member_name = maybe_convert_to_dataset_name(member)
        if member_name == target_name or member_name in existing:
            raise ValueError(f"{member_name} cannot be both a member and the collection")
        member_json = load_json(join(raw, member_name, "dataset.json"))
        check_training_data(join(raw, member_name), read_values=False)  # files and headers; values at planning
        task = TaskSpec.from_dataset_json(member_json, member_name)
        if member_name in task_overrides:
            task = TaskSpec.from_dict({**task.to_dict(), **task_overrides.pop(member_name)})
        files = get_filenames_of_train_images_and_targets(join(raw, member_name), member_json)
        if not files:
            raise ValueError(f"{member_name} has no training cases")
        check_member(member_name, member_json, task, files)
        orientations[member_name] = orientation_counts(entry["images"][0] for entry in files.values())
        member_cases = {collection_case_id(task.name, k): k for k in sorted(files)}
        cases.update({cid: task.name for cid in member_cases})
        member_table[task.name] = {"dataset": member_name, "cases": member_cases}
        endings[member_name] = member_json["file_ending"]
        tasks.append(task)
    if task_overrides:
        raise ValueError(f"task overrides name datasets that are not members: {sorted(task_overrides)}")
    if len(set(endings.values())) != 1:
        raise ValueError(f"members must share one file ending, got {endings}")
    registry = TaskRegistry(tasks, cases)  # validates names and the case table
    for line in orientation_report(orientations):
        print(line)

    dataset_json = collection_dataset_json(registry, name, next(iter(endings.values())), member_table)
    # Write next to the target, then move: nothing half-written is left behind.
    staging = tempfile.mkdtemp(prefix=f".{target_name}.", dir=raw)
    try:
        save_json(dataset_json, join(staging, "dataset.json"), sort_keys=False)
        for old in existing:
            shutil.rmtree(join(raw, old))
        os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return target_name


def check_member(member_name: str, member_json: Mapping, task: TaskSpec, files: Mapping[str, dict]) -> None:
    """The member's task entry agrees with its dataset: channel count (dataset.json and the files of every case)
    and labels. A task without an entry, derived from the dataset, is said in one line."""
    where = f"{member_name}/dataset.json"
    channels = member_json.get("channel_names", member_json.get("modality", {}))
    if task.num_channels != len(channels):
        raise ValueError(f"{where}: its universal_task entry has {task.num_channels} channel(s) "
                         f"({', '.join(task.modalities)}) but channel_names has {len(channels)} "
                         f"({', '.join(channels.values())}); make the entry's 'channels' match channel_names")
    for case, entry in files.items():
        if len(entry["images"]) != task.num_channels:
            raise ValueError(f"{member_name}: case {case} has {len(entry['images'])} image file(s), the task "
                             f"{task.num_channels} channel(s) ({', '.join(task.modalities)})")
    labels = {str(k): v for k, v in member_json.get("labels", {}).items()}
    if labels and sorted(labels.values(), key=str) != sorted(task.labels.values(), key=str):
        raise ValueError(f"{where}: labels {labels} differ from its universal_task entry's {task.labels}")
    if MEMBER_KEY not in member_json:
        print(f"{member_name}: no '{MEMBER_KEY}' entry; task '{task.name}' derived from its name, channel_names and "
              f"labels (add a '{MEMBER_KEY}' entry to its dataset.json, or pass --tasks FILE, to change it)")


def collection_dataset_json(registry: TaskRegistry, name: str, file_ending: str,
                            members: Optional[Dict] = None) -> Dict:
    """A collection's dataset.json: as many channels and classes as its largest task, the registry (and the member
    table when built from member datasets)."""
    block = registry.to_dict()
    if members is not None:
        block["members"] = members
    return {
        "channel_names": {str(i): "task-dependent" for i in range(max(registry.channel_counts))},
        "labels": {"background": 0, **{f"class_{i}": i for i in range(1, registry.max_num_classes)}},
        "numTraining": len(registry.cases),
        "file_ending": file_ending,
        "name": name,
        "description": f"Universal collection of {len(registry)} tasks: {', '.join(registry.names)}. Labels are "
                       f"task-local; see '{COLLECTION_KEY}'.",
        COLLECTION_KEY: block,
    }


def load_collection_dataset_json(collection: Union[int, str]) -> Dict:
    name = maybe_convert_to_dataset_name(collection)
    dataset_json = load_json(join(_require_raw(), name, "dataset.json"))
    if COLLECTION_KEY not in dataset_json or "members" not in dataset_json[COLLECTION_KEY]:
        raise ValueError(f"{name} is not a collection (no '{COLLECTION_KEY}.members' in its dataset.json); build "
                         f"it with nnUNetv2_universal_build_collection")
    return dataset_json


@console_command
def main(argv=None):
    parser = command_parser(description="Define a universal collection from converted nnU-Net datasets.")
    parser.add_argument("-d", nargs="+", required=True, help="member dataset ids or names (one task each)")
    parser.add_argument("-o", type=int, required=True, help="dataset id of the collection")
    parser.add_argument("-n", required=True, help="collection name (Dataset<ID>_<NAME>)")
    parser.add_argument("--tasks", default=None,
                        help="optional JSON file {member dataset name: task entry fields} overriding the members' "
                             "universal_task entries (e.g. spacing, description)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    args = parser.parse_args(argv)
    overrides = None
    if args.tasks:
        with open(args.tasks) as f:
            overrides = json.load(f)
    name = build_collection(args.d, args.o, args.n, overrides, args.overwrite)
    print(f"Collection written: {join(_require_raw(), name, 'dataset.json')}")


if __name__ == "__main__":
    main()
