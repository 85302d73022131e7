"""The task registry: the one source of truth for what each task is.

A task is one segmentation problem from one source dataset: its input channels (with modality names), its
task-local labels (0 = background), how its images are preprocessed and a short text description. Member
datasets carry their entry under the dataset.json key `universal_task`; a collection carries the whole registry
(tasks + which case belongs to which task) under the key `universal`. nnU-Net preserves extra dataset.json keys,
so the registry travels from raw data to the preprocessed folder, the trainer and the model folder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from nnunetv2_universal.conditioning import Condition

MEMBER_KEY = "universal_task"
COLLECTION_KEY = "universal"

CT_WINDOW_DEFAULT = (-325.0, 325.0)
# Our scheme names -> normalisation class names (nnU-Net's, or the plugin's: collection/normalization.py).
# "ct_window" is the fixed HU window of UniSeg/DoDNet, realised with nnU-Net's CTNormalization and fixed intensity
# properties (see collection.task_plans).
NORMALIZATION_SCHEMES = {
    "ct_window": "CTNormalization",
    "ct_clip_zscore": "ClippedZScoreNormalization",  # clip to ct_window, then per-image z-score (Hermes' reference)
    "zscore_p2_p98": "PercentileClippedZScoreNormalization",  # clip to the image's p2/p98, then z-score (Hermes)
    "ct": "CTNormalization",
    "zscore": "ZScoreNormalization",
    "nonorm": "NoNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
}
FIXED_WINDOW_SCHEMES = ("ct_window", "ct_clip_zscore")  # schemes that read the task's ct_window
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def shared_structure_ids(keys_per_task: Sequence[Sequence[str]]) -> List[List[int]]:
    """Global structure ids per task: one id per distinct structure key, numbered in order of first appearance."""
    vocabulary: Dict[str, int] = {}
    return [[vocabulary.setdefault(k, len(vocabulary)) for k in keys] for keys in keys_per_task]


class RegistryError(ValueError):
    """A task registry (or a task entry) is invalid."""


class UnknownTaskError(KeyError):
    """A task name or index that the registry does not hold."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


def default_normalization(modality: str) -> str:
    """CT channels get the fixed window, everything else (MR, PET, ...) per-image z-score."""
    return "ct_window" if modality.strip().lower() == "ct" else "zscore"


@dataclass
class TaskSpec:
    """One task: name, source dataset, channels, task-local labels, preprocessing and a text description."""
    name: str
    dataset: str
    channels: Dict[str, str]
    labels: Dict[str, int]
    spacing: Optional[List[float]] = None
    normalization: Optional[List[str]] = None
    ct_window: List[float] = field(default_factory=lambda: list(CT_WINDOW_DEFAULT))
    description: str = ""
    # label name -> shared structure key: labels of different tasks with one key are one structure (methods with
    # per-structure tokens, Hermes, share them); labels without an entry are their task's own structure
    structures: Dict[str, str] = field(default_factory=dict)
    # the modality that names the task's image as a whole (Hermes' modality prior); None: PET if a channel is PET
    # (the functional image carries the task, as the reference feeds SUV for AutoPET), otherwise channel 0
    prior_modality: Optional[str] = None
    # weight of each of the task's cases where cases are sampled by weight (Hermes: the reference's per-dataset
    # weights; a task's share of batches is proportional to weight x cases)
    sampling_weight: float = 1.0

    def __post_init__(self):
        self.channels = {str(k): str(v) for k, v in self.channels.items()}
        if not self.channels or sorted(self.channels) != sorted(str(i) for i in range(len(self.channels))):
            raise RegistryError(f"task '{self.name}': channels must be keyed '0'..'N-1', got {sorted(self.channels)}")
        self.labels = {str(k): int(v) for k, v in self.labels.items()}
        if self.normalization is None:
            self.normalization = [default_normalization(self.channels[k]) for k in sorted(self.channels, key=int)]
        if self.spacing is not None:
            self.spacing = [float(s) for s in self.spacing]
        self.ct_window = [float(v) for v in self.ct_window]
        self.structures = {str(k): str(v) for k, v in (self.structures or {}).items()}
        self.sampling_weight = float(self.sampling_weight)
        self.validate()

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def num_classes(self) -> int:
        """Classes including background."""
        return len(self.labels)

    @property
    def modalities(self) -> List[str]:
        return [self.channels[k] for k in sorted(self.channels, key=int)]

    @property
    def foreground_labels(self) -> Dict[str, int]:
        return {k: v for k, v in self.labels.items() if v != 0}

    def structure_keys(self) -> List[str]:
        """One structure key per foreground label, in label-value order."""
        names = sorted(self.foreground_labels, key=self.foreground_labels.get)
        return [self.structures.get(n, f"{self.name}/{n}") for n in names]

    @property
    def main_modality(self) -> str:
        if self.prior_modality is not None:
            return self.prior_modality
        pet = [m for m in self.modalities if m.strip().lower() == "pet"]
        return pet[0] if pet else self.modalities[0]

    def validate(self) -> None:
        where = f"task '{self.name}'"
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise RegistryError(f"{where}: name must start with a letter and use only letters, digits, '_' or '-'")
        if not self.dataset:
            raise RegistryError(f"{where}: 'dataset' (the source nnU-Net dataset) is empty")
        if sorted(int(k) for k in self.channels) != list(range(len(self.channels))) or not self.channels:
            raise RegistryError(f"{where}: channels must be keyed '0'..'N-1', got {sorted(self.channels)}")
        values = sorted(self.labels.values())
        if values != list(range(len(values))) or len(values) < 2:
            raise RegistryError(f"{where}: labels must be consecutive integers starting at 0 (background) with at "
                                f"least one foreground class, got {self.labels}")
        if self.labels.get("background", None) != 0:
            raise RegistryError(f"{where}: label 0 must be named 'background', got {self.labels}")
        if len(self.normalization) != self.num_channels:
            raise RegistryError(f"{where}: {len(self.normalization)} normalisation entries for "
                                f"{self.num_channels} channels")
        for scheme in self.normalization:
            if scheme not in NORMALIZATION_SCHEMES:
                raise RegistryError(f"{where}: unknown normalisation '{scheme}'; valid: "
                                    f"{sorted(NORMALIZATION_SCHEMES)}")
        if self.spacing is not None and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise RegistryError(f"{where}: spacing must be 2 or 3 positive numbers, got {self.spacing}")
        if len(self.ct_window) != 2 or self.ct_window[0] >= self.ct_window[1]:
            raise RegistryError(f"{where}: ct_window must be [low, high] with low < high, got {self.ct_window}")
        unknown = sorted(set(self.structures) - set(self.foreground_labels))
        if unknown:
            raise RegistryError(f"{where}: 'structures' names labels the task does not have: {unknown}; its "
                                f"labels: {sorted(self.foreground_labels)}")
        if not self.sampling_weight > 0:
            raise RegistryError(f"{where}: sampling_weight must be positive, got {self.sampling_weight}")
        if self.prior_modality is not None and self.prior_modality not in self.modalities:
            raise RegistryError(f"{where}: prior_modality {self.prior_modality!r} is not one of its channels "
                                f"{self.modalities}")

    def to_dict(self) -> dict:
        return {"name": self.name, "dataset": self.dataset, "channels": dict(self.channels),
                "labels": dict(self.labels), "spacing": self.spacing, "normalization": list(self.normalization),
                "ct_window": list(self.ct_window), "description": self.description,
                "structures": dict(self.structures), "prior_modality": self.prior_modality,
                "sampling_weight": self.sampling_weight}

    @classmethod
    def from_dict(cls, entry: Mapping) -> "TaskSpec":
        required = {"name", "dataset", "channels", "labels"}
        missing = required - set(entry)
        if missing:
            raise RegistryError(f"task entry {dict(entry).get('name', '?')!r} lacks {sorted(missing)}")
        unknown = set(entry) - {"name", "dataset", "channels", "labels", "spacing", "normalization", "ct_window",
                                "description", "structures", "prior_modality", "sampling_weight"}
        if unknown:
            raise RegistryError(f"task entry {entry['name']!r} has unknown keys {sorted(unknown)}")
        return cls(**dict(entry))

    @classmethod
    def from_dataset_json(cls, dataset_json: Mapping, dataset_name: str) -> "TaskSpec":
        """The member's own `universal_task` entry, or one derived from its channel names and labels."""
        if MEMBER_KEY in dataset_json:
            entry = dict(dataset_json[MEMBER_KEY])
            entry.setdefault("dataset", dataset_name)
            return cls.from_dict(entry)
        channels = dataset_json.get("channel_names", dataset_json.get("modality"))
        if channels is None or "labels" not in dataset_json:
            raise RegistryError(f"{dataset_name}: dataset.json has neither '{MEMBER_KEY}' nor channel_names/labels")
        labels = dataset_json["labels"]
        if any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise RegistryError(f"{dataset_name}: region-based labels are not supported in a collection")
        name = re.sub(r"^Dataset\d+_", "", dataset_name)
        try:
            return cls(name=name, dataset=dataset_name, channels=channels, labels=labels,
                       description=str(dataset_json.get("description", "")))
        except RegistryError as e:
            raise RegistryError(f"{dataset_name}/dataset.json has no '{MEMBER_KEY}' entry and the task derived from "
                                f"it is invalid ({e}); add a '{MEMBER_KEY}' entry with a valid 'name' (and channels, "
                                f"labels) to that dataset.json") from None


class TaskRegistry:
    """An ordered set of tasks (index = task id) plus the explicit case -> task table of a collection."""

    def __init__(self, tasks: Sequence[TaskSpec], cases: Optional[Mapping[str, str]] = None):
        self.tasks: List[TaskSpec] = list(tasks)
        self.cases: Dict[str, str] = dict(cases or {})
        self.validate()

    # ---- construction / serialisation
    @classmethod
    def from_dict(cls, block: Mapping) -> "TaskRegistry":
        if "tasks" not in block:
            raise RegistryError(f"registry block lacks 'tasks' (keys: {sorted(block)})")
        return cls([TaskSpec.from_dict(t) for t in block["tasks"]], block.get("cases", {}))

    @classmethod
    def from_dataset_json(cls, dataset_json: Mapping) -> "TaskRegistry":
        if COLLECTION_KEY not in dataset_json:
            raise RegistryError(f"dataset.json has no '{COLLECTION_KEY}' block: this is not a collection built "
                                f"by nnUNetv2_universal_build_collection")
        return cls.from_dict(dataset_json[COLLECTION_KEY])

    def to_dict(self) -> dict:
        return {"tasks": [t.to_dict() for t in self.tasks], "cases": dict(self.cases)}

    def validate(self) -> None:
        if not self.tasks:
            raise RegistryError("a registry needs at least one task")
        names = [t.name for t in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RegistryError(f"duplicate task names: {duplicates}")
        bad = sorted({t for t in self.cases.values() if t not in names})
        if bad:
            raise RegistryError(f"cases refer to unknown tasks {bad}; valid tasks: {names}")

    # ---- lookups
    @property
    def names(self) -> List[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def index(self, task: Union[str, int]) -> int:
        if isinstance(task, np.integer):
            task = int(task)
        if isinstance(task, int) and not isinstance(task, bool):
            if 0 <= task < len(self.tasks):
                return task
            raise UnknownTaskError(f"task index {task} out of range 0..{len(self.tasks) - 1}; tasks: {self.names}")
        for i, t in enumerate(self.tasks):
            if t.name == task:
                return i
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {', '.join(self.names)}")

    def task(self, task: Union[str, int]) -> TaskSpec:
        return self.tasks[self.index(task)]

    def structure_ids(self) -> List[List[int]]:
        """Per task, the global structure id of each foreground label (labels with one structure key share it)."""
        return shared_structure_ids([t.structure_keys() for t in self.tasks])

    @property
    def max_num_classes(self) -> int:
        return max(t.num_classes for t in self.tasks)

    @property
    def channel_counts(self) -> List[int]:
        return sorted({t.num_channels for t in self.tasks})

    @property
    def modalities(self) -> List[str]:
        """Modality vocabulary (index = modality id in a Condition)."""
        return sorted({m for t in self.tasks for m in t.modalities})

    def num_classes(self, task: Union[str, int]) -> int:
        return self.task(task).num_classes

    def condition(self, task: Union[str, int]) -> Condition:
        """The Condition a network gets for this task."""
        i = self.index(task)
        vocab = self.modalities
        return Condition(task=i, modality=tuple(vocab.index(m) for m in self.tasks[i].modalities), dataset=i)

    def task_of_case(self, case_id: str) -> int:
        try:
            return self.index(self.cases[case_id])
        except KeyError:
            raise UnknownTaskError(f"case {case_id!r} is not in the collection's case table") from None

    def task_of_batch(self, case_ids: Iterable[str]) -> int:
        """The single task of a batch; batches must not mix tasks."""
        tasks = {self.task_of_case(k) for k in case_ids}
        if len(tasks) != 1:
            raise ValueError(f"a batch must hold cases of one task, got tasks {sorted(self.names[t] for t in tasks)}")
        return tasks.pop()

    def cases_by_task(self, case_ids: Optional[Iterable[str]] = None) -> Dict[int, List[str]]:
        """Case ids grouped by task index (restricted to `case_ids` if given)."""
        ids = self.cases.keys() if case_ids is None else case_ids
        grouped: Dict[int, List[str]] = {i: [] for i in range(len(self.tasks))}
        for k in ids:
            grouped[self.task_of_case(k)].append(k)
        return grouped

    def tasks_for_channels(self, num_channels: int, modalities: Optional[Sequence[str]] = None) -> List[int]:
        """Tasks whose input matches this channel count (and modality names, case-insensitive, if given)."""
        found = []
        for i, t in enumerate(self.tasks):
            if t.num_channels != num_channels:
                continue
            if modalities is not None and [m.lower() for m in t.modalities] != [m.lower() for m in modalities]:
                continue
            found.append(i)
        return found
