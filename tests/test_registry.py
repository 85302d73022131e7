"""Unit tests of the task registry: TaskSpec validation, default normalisation, lookups, conditions and
(de)serialisation."""
from __future__ import annotations

import json

import pytest

from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.registry import (COLLECTION_KEY, MEMBER_KEY, RegistryError, TaskRegistry, TaskSpec,
                                         UnknownTaskError, default_normalization)


def _spec(name="liver", dataset="Dataset001_Liver", channels=None, labels=None, **kw) -> TaskSpec:
    return TaskSpec(name=name, dataset=dataset, channels=channels or {"0": "CT"},
                    labels=labels or {"background": 0, "liver": 1, "tumor": 2}, **kw)


def _registry() -> TaskRegistry:
    return TaskRegistry(
        [_spec("liver", "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1, "tumor": 2}),
         _spec("prostate", "Dataset002_Prostate", {"0": "T2", "1": "ADC"}, {"background": 0, "prostate": 1}),
         _spec("brats", "Dataset003_BraTS", {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
               {"background": 0, "edema": 1, "nonenh": 2, "enh": 3}),
         _spec("spleen", "Dataset004_Spleen", {"0": "CT"}, {"background": 0, "spleen": 1}),
         _spec("lesion", "Dataset005_Lesion", {"0": "PET"}, {"background": 0, "lesion": 1})],
        cases={"liver_001": "liver", "liver_002": "liver", "prostate_001": "prostate", "brats_001": "brats",
               "spleen_001": "spleen", "lesion_001": "lesion"})


# ---------------------------------------------------------------- TaskSpec validation

def test_valid_spec_properties():
    t = _spec(channels={"1": "ADC", "0": "T2"}, labels={"background": 0, "a": 1}, spacing=[3, 0.5, 0.5])
    assert t.num_channels == 2 and t.num_classes == 2
    assert t.modalities == ["T2", "ADC"]
    assert t.foreground_labels == {"a": 1}
    assert t.spacing == [3.0, 0.5, 0.5] and all(isinstance(s, float) for s in t.spacing)
    assert t.ct_window == [-325.0, 325.0]


@pytest.mark.parametrize("name", ["1abc", "", "with space", "dot.name", "_x"])
def test_bad_name_rejected(name):
    with pytest.raises(RegistryError, match="name must start with a letter"):
        _spec(name=name)


def test_good_names_accepted():
    for name in ("a", "Liver_2", "kits-19"):
        assert _spec(name=name).name == name


def test_empty_dataset_rejected():
    with pytest.raises(RegistryError, match="dataset"):
        _spec(dataset="")


@pytest.mark.parametrize("labels", [{"background": 0, "a": 1, "b": 3},
                                    {"background": 0, "a": 2},
                                    {"background": 0},
                                    {"background": 0, "a": 1, "b": 1}])
def test_labels_must_be_consecutive(labels):
    with pytest.raises(RegistryError, match="consecutive integers starting at 0") as info:
        _spec(labels=labels)
    assert "task 'liver'" in str(info.value)


def test_labels_must_start_at_zero():
    with pytest.raises(RegistryError, match="consecutive"):
        _spec(labels={"a": 1, "b": 2})


def test_background_must_be_named_background():
    with pytest.raises(RegistryError, match="label 0 must be named 'background'"):
        _spec(labels={"bg": 0, "liver": 1})
    with pytest.raises(RegistryError, match="'background'"):
        _spec(labels={"liver": 0, "background": 1})


def test_unknown_normalisation_rejected():
    with pytest.raises(RegistryError, match="unknown normalisation 'minmax'") as info:
        _spec(normalization=["minmax"])
    for valid in ("ct_window", "zscore", "nonorm"):
        assert valid in str(info.value)


def test_normalisation_count_must_match_channels():
    with pytest.raises(RegistryError, match="2 normalisation entries for 1 channels"):
        _spec(normalization=["zscore", "zscore"])


@pytest.mark.parametrize("channels", [{"1": "CT"}, {"0": "T1", "2": "T2"}, {"0": "T1", "1": "T2", "3": "PD"}, {}])
def test_wrong_channel_keys_rejected(channels):
    with pytest.raises(RegistryError, match=r"channels must be keyed '0'..'N-1'") as info:
        TaskSpec(name="liver", dataset="D", channels=channels, labels={"background": 0, "liver": 1},
                 normalization=["zscore"] * len(channels))
    assert str(sorted(channels)) in str(info.value)


@pytest.mark.parametrize("normalization", [None, ["zscore"]])
def test_non_integer_channel_key_gives_registry_error(normalization):
    with pytest.raises(RegistryError, match="channels must be keyed"):
        TaskSpec(name="liver", dataset="D", channels={"a": "CT"}, labels={"background": 0, "liver": 1},
                 normalization=normalization)


@pytest.mark.parametrize("spacing", [[1, 0, 1], [1, -2, 1], [1.0], [1, 1, 1, 1]])
def test_bad_spacing_rejected(spacing):
    with pytest.raises(RegistryError, match="spacing must be 2 or 3 positive numbers"):
        _spec(spacing=spacing)


def test_bad_ct_window_rejected():
    with pytest.raises(RegistryError, match="ct_window"):
        _spec(ct_window=[100, -100])


def test_from_dict_missing_and_unknown_keys():
    with pytest.raises(RegistryError, match=r"lacks \['labels'\]"):
        TaskSpec.from_dict({"name": "a", "dataset": "D", "channels": {"0": "CT"}})
    with pytest.raises(RegistryError, match="unknown keys"):
        TaskSpec.from_dict({"name": "a", "dataset": "D", "channels": {"0": "CT"},
                            "labels": {"background": 0, "x": 1}, "colour": "red"})


# ---------------------------------------------------------------- default normalisation

def test_default_normalisation_per_modality():
    assert default_normalization("CT") == "ct_window"
    assert default_normalization(" ct ") == "ct_window"
    assert default_normalization("T2") == "zscore"
    assert default_normalization("PET") == "zscore"
    assert _spec(channels={"0": "CT"}).normalization == ["ct_window"]
    assert _spec(channels={"0": "T2"}).normalization == ["zscore"]
    assert _spec(channels={"0": "PET"}).normalization == ["zscore"]
    assert _spec(channels={"1": "CT", "0": "T2"}).normalization == ["zscore", "ct_window"]


# ---------------------------------------------------------------- TaskRegistry

def test_duplicate_names_rejected():
    with pytest.raises(RegistryError, match=r"duplicate task names: \['liver'\]"):
        TaskRegistry([_spec("liver"), _spec("liver", dataset="Other")])


def test_empty_registry_rejected():
    with pytest.raises(RegistryError, match="at least one task"):
        TaskRegistry([])


def test_cases_with_unknown_task_rejected():
    with pytest.raises(RegistryError) as info:
        TaskRegistry([_spec("liver"), _spec("spleen")], cases={"c1": "liver", "c2": "kidney"})
    msg = str(info.value)
    assert "['kidney']" in msg
    assert "valid tasks" in msg and "liver" in msg and "spleen" in msg


def test_index_by_name_and_unknown_name():
    r = _registry()
    assert r.names == ["liver", "prostate", "brats", "spleen", "lesion"]
    assert len(r) == 5
    assert [r.index(n) for n in r.names] == [0, 1, 2, 3, 4]
    with pytest.raises(UnknownTaskError) as info:
        r.index("nope")
    assert isinstance(info.value, KeyError)
    msg = str(info.value)
    assert "'nope'" in msg
    assert not msg.startswith('"')  # not KeyError's quoted repr
    for name in r.names:
        assert name in msg


def test_index_by_int():
    r = _registry()
    assert r.index(4) == 4
    for bad in (5, -1, 100):
        with pytest.raises(UnknownTaskError, match="out of range"):
            r.index(bad)
    with pytest.raises(UnknownTaskError):
        r.index(True)  # a bool is not a task index
    assert r.task("brats").num_classes == 4
    assert r.num_classes(1) == 2
    assert r.max_num_classes == 4
    assert r.channel_counts == [1, 2, 4]


def test_task_of_case_and_batch():
    r = _registry()
    assert r.task_of_case("prostate_001") == 1
    assert r.task_of_batch(["liver_001", "liver_002"]) == 0
    with pytest.raises(ValueError, match="one task") as info:
        r.task_of_batch(["liver_001", "spleen_001"])
    assert "liver" in str(info.value) and "spleen" in str(info.value)
    with pytest.raises(UnknownTaskError, match="case table"):
        r.task_of_case("kidney_001")
    with pytest.raises(ValueError):
        r.task_of_batch([])


def test_cases_by_task():
    r = _registry()
    grouped = r.cases_by_task()
    assert grouped == {0: ["liver_001", "liver_002"], 1: ["prostate_001"], 2: ["brats_001"], 3: ["spleen_001"],
                       4: ["lesion_001"]}
    assert r.cases_by_task(["spleen_001"]) == {0: [], 1: [], 2: [], 3: ["spleen_001"], 4: []}


def test_condition_uses_sorted_modality_vocabulary():
    r = _registry()
    vocab = sorted({"CT", "T2", "ADC", "FLAIR", "T1", "T1ce", "PET"})
    assert r.modalities == vocab
    c = r.condition("brats")
    assert isinstance(c, Condition)
    assert c.task == 2
    assert c.modality == tuple(vocab.index(m) for m in ("FLAIR", "T1", "T1ce", "T2"))
    assert r.condition("prostate") == Condition(task=1, modality=(vocab.index("T2"), vocab.index("ADC")),
                                                dataset=1)
    assert r.condition(0).modality == (vocab.index("CT"),)
    with pytest.raises(UnknownTaskError):
        r.condition("nope")


def test_round_trip_dict_and_json():
    r = _registry()
    d = r.to_dict()
    again = TaskRegistry.from_dict(d)
    assert again.to_dict() == d
    assert TaskRegistry.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert again.names == r.names and again.cases == r.cases
    assert TaskRegistry.from_dataset_json({COLLECTION_KEY: d, "labels": {}}).to_dict() == d


def test_from_dict_without_tasks_rejected():
    with pytest.raises(RegistryError, match="lacks 'tasks'"):
        TaskRegistry.from_dict({"cases": {}})


def test_tasks_for_channels():
    r = _registry()
    assert r.tasks_for_channels(1) == [0, 3, 4]
    assert r.tasks_for_channels(2) == [1]
    assert r.tasks_for_channels(4) == [2]
    assert r.tasks_for_channels(3) == []
    assert r.tasks_for_channels(1, ["ct"]) == [0, 3]
    assert r.tasks_for_channels(1, ["PET"]) == [4]
    assert r.tasks_for_channels(2, ["t2", "adc"]) == [1]
    assert r.tasks_for_channels(2, ["ADC", "T2"]) == []  # order matters
    assert r.tasks_for_channels(1, ["MR"]) == []


def test_registry_from_dataset_json_requires_universal_block():
    with pytest.raises(RegistryError, match="no 'universal' block"):
        TaskRegistry.from_dataset_json({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}})


# ---------------------------------------------------------------- TaskSpec.from_dataset_json

def test_spec_from_dataset_json_derived():
    dj = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
          "description": "prostate zones", "file_ending": ".nii.gz"}
    t = TaskSpec.from_dataset_json(dj, "Dataset005_Prostate")
    assert t.name == "Prostate"
    assert t.dataset == "Dataset005_Prostate"
    assert t.channels == {"0": "T2", "1": "ADC"}
    assert t.labels == {"background": 0, "PZ": 1, "TZ": 2}
    assert t.normalization == ["zscore", "zscore"]
    assert t.description == "prostate zones"


def test_spec_from_dataset_json_v1_modality_key():
    dj = {"modality": {"0": "CT"}, "labels": {"background": 0, "liver": 1}}
    t = TaskSpec.from_dataset_json(dj, "Dataset123_Liver_Tumour")
    assert t.name == "Liver_Tumour"
    assert t.normalization == ["ct_window"]


def test_spec_from_dataset_json_with_member_entry():
    entry = {"name": "kidney", "channels": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2},
             "spacing": [1, 0.8, 0.8], "description": "KiTS"}
    dj = {"channel_names": {"0": "ignored"}, "labels": {"background": 0, "x": 1}, MEMBER_KEY: entry}
    t = TaskSpec.from_dataset_json(dj, "Dataset007_KiTS")
    assert t.name == "kidney"  # the entry's name, not one derived from the dataset
    assert t.dataset == "Dataset007_KiTS"  # filled in from the dataset name
    assert t.labels == {"background": 0, "kidney": 1, "tumor": 2}
    assert t.spacing == [1.0, 0.8, 0.8]
    assert t.description == "KiTS"
    assert "dataset" not in entry  # the caller's entry is not modified
    t2 = TaskSpec.from_dataset_json({MEMBER_KEY: dict(entry, dataset="Elsewhere")}, "Dataset007_KiTS")
    assert t2.dataset == "Elsewhere"


def test_spec_from_dataset_json_errors():
    with pytest.raises(RegistryError, match="neither"):
        TaskSpec.from_dataset_json({"labels": {"background": 0, "a": 1}}, "Dataset001_X")
    with pytest.raises(RegistryError, match="region-based"):
        TaskSpec.from_dataset_json({"channel_names": {"0": "T1"},
                                    "labels": {"background": 0, "whole": [1, 2], "core": 2}}, "Dataset001_X")


def test_shared_structure_keys_give_shared_ids_and_unknown_labels_are_rejected():
    ct = _spec("amos_ct", labels={"background": 0, "spleen": 1, "liver": 2, "bladder": 3},
               structures={"spleen": "AMOS/spleen", "liver": "AMOS/liver", "bladder": "AMOS/bladder"})
    mr = _spec("amos_mr", channels={"0": "MRI"}, labels={"background": 0, "liver": 1, "spleen": 2},
               structures={"spleen": "AMOS/spleen", "liver": "AMOS/liver"})
    btcv = _spec("btcv", labels={"background": 0, "spleen": 1})  # same organ, its own structure (as Hermes)
    registry = TaskRegistry([ct, mr, btcv])
    assert registry.structure_ids() == [[0, 1, 2], [1, 0], [3]]
    assert TaskRegistry.from_dict(registry.to_dict()).structure_ids() == [[0, 1, 2], [1, 0], [3]]
    with pytest.raises(RegistryError, match="'structures' names labels the task does not have: \\['kidney'\\]"):
        _spec("x", structures={"kidney": "k"})


def test_main_modality_is_pet_when_a_channel_is_pet_or_explicit():
    assert _spec("petct", channels={"0": "CT", "1": "PET"}, labels={"background": 0, "lesion": 1}).main_modality \
        == "PET"
    assert _spec("t1t2", channels={"0": "T2", "1": "T1"}).main_modality == "T2"
    assert _spec("t1t2", channels={"0": "T2", "1": "T1"}, prior_modality="T1").main_modality == "T1"
    with pytest.raises(RegistryError, match="prior_modality 'CT' is not one of its channels"):
        _spec("t1", channels={"0": "T1"}, prior_modality="CT")
