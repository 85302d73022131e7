"""Property-based checks (hypothesis) over task entries, registries and echo dataset.json contents: valid input
round-trips exactly; any corruption is refused with the plugin's own error type (never a KeyError/TypeError from
deep inside), so users get a message that names the task or case."""
from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnunetv2_universal.echo.metadata import ECHO_CLASSES, ECHO_LABELS, ECHO_VIEWS, EchoMetadata, EchoMetadataError
from nnunetv2_universal.registry import RegistryError, TaskRegistry, TaskSpec

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
modalities = st.sampled_from(["CT", "MRI", "T1", "T2", "PET", "US", "cineMRI"])


@st.composite
def task_entries(draw, name=None):
    n_channels = draw(st.integers(1, 4))
    n_labels = draw(st.integers(1, 6))
    label_names = draw(st.lists(names, min_size=n_labels, max_size=n_labels, unique=True)
                       .filter(lambda ls: "background" not in ls))
    entry = {"name": name or draw(names), "dataset": f"Dataset{draw(st.integers(1, 999)):03d}_X",
             "channels": {str(i): draw(modalities) for i in range(n_channels)},
             "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(label_names)}},
             "description": draw(st.text(max_size=20))}
    if draw(st.booleans()):
        entry["spacing"] = draw(st.lists(st.floats(0.1, 10), min_size=3, max_size=3))
    return entry


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_entries())
def test_valid_task_entries_round_trip(entry):
    spec = TaskSpec.from_dict(entry)
    again = TaskSpec.from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict() and again.num_classes == len(entry["labels"])


CORRUPTIONS = {
    "unknown key": lambda e: e.update(colour="red"),
    "missing labels": lambda e: e.pop("labels"),
    "label gap": lambda e: e["labels"].update(extra=len(e["labels"]) + 3),
    "no background": lambda e: e["labels"].pop("background"),
    "channel keys": lambda e: e.update(channels={"1": "CT"}),
    "bad name": lambda e: e.update(name="1-bad name"),
    "bad normalisation": lambda e: e.update(normalization=["histogram"] * len(e["channels"])),
    "negative spacing": lambda e: e.update(spacing=[1.0, -1.0, 1.0]),
    "bad window": lambda e: e.update(ct_window=[100, -100]),
}


@settings(max_examples=60, deadline=None)
@given(task_entries(), st.sampled_from(sorted(CORRUPTIONS)))
def test_corrupted_task_entries_raise_registry_errors(entry, corruption):
    broken = copy.deepcopy(entry)
    CORRUPTIONS[corruption](broken)
    with pytest.raises(RegistryError):
        TaskSpec.from_dict(broken)


@settings(max_examples=40, deadline=None)
@given(st.lists(task_entries(), min_size=1, max_size=4, unique_by=lambda e: e["name"]),
       st.integers(1, 5))
def test_registries_round_trip_and_refuse_unknown_case_tasks(entries, cases_per_task):
    specs = [TaskSpec.from_dict(e) for e in entries]
    cases = {f"{s.name}__case{i}": s.name for s in specs for i in range(cases_per_task)}
    registry = TaskRegistry(specs, cases)
    again = TaskRegistry.from_dict(registry.to_dict())
    assert again.to_dict() == registry.to_dict() and again.max_num_classes == max(s.num_classes for s in specs)
    with pytest.raises(RegistryError):
        TaskRegistry(specs, {**cases, "stray": "NotATask_"})


@st.composite
def echo_dataset_jsons(draw):
    n = draw(st.integers(1, 6))
    metadata = {f"CASE_{i}": {"dataset": draw(st.sampled_from(["CAMUS", "EchoNetDynamic"])),
                              "view": draw(st.sampled_from(ECHO_VIEWS)),
                              "annotated_classes": draw(st.lists(st.sampled_from(["LV_epi", "LV_endo"]), min_size=1,
                                                                 max_size=2, unique=True))}
                for i in range(n)}
    return {"labels": dict(ECHO_LABELS), "echo_classes": dict(ECHO_CLASSES), "echo_views": list(ECHO_VIEWS),
            "echo_case_metadata": metadata}


@settings(max_examples=60, deadline=None)
@given(echo_dataset_jsons(), st.sampled_from(["view", "classes", "empty classes", "missing key", "class text"]))
def test_echo_metadata_valid_and_corrupted(dataset_json, corruption):
    meta = EchoMetadata(dataset_json)
    cases = sorted(dataset_json["echo_case_metadata"])
    assert len(meta.availability(cases)) == len(cases)
    broken = copy.deepcopy(dataset_json)
    first = broken["echo_case_metadata"][cases[0]]
    if corruption == "view":
        first["view"] = "PLAX"
    elif corruption == "classes":
        first["annotated_classes"] = ["RV"]
    elif corruption == "empty classes":
        first["annotated_classes"] = []
    elif corruption == "missing key":
        broken.pop("echo_views")
    else:
        broken["echo_classes"].pop("LV_epi")
    with pytest.raises(EchoMetadataError):
        EchoMetadata(broken)
