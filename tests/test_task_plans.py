"""Unit tests of the per-task plans views and of the plans templates."""
from __future__ import annotations

import copy
import glob
import json
import os

import numpy as np
import pytest
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

from nnunetv2_universal.collection.task_plans import (TASKS_KEY, TaskView, ct_window_intensity_properties,
                                                      task_dataset_json, task_plans)
from nnunetv2_universal.collection.templates import CPU_DEMO, ECHO, HERMES, PAPER, TEMPLATES, load_template
from nnunetv2_universal.registry import TaskRegistry, TaskSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANS_DIR = os.path.join(REPO, "plans")


# ---------------------------------------------------------------- CT window

@pytest.mark.parametrize("low, high", [(-325, 325), (-1000, 400)])
def test_ct_window_with_nnunet_ct_normalization(low, high):
    rng = np.random.default_rng(0)
    img = rng.uniform(-1200, 1500, size=(8, 16, 16)).astype(np.float32)
    img[0, 0, :4] = [-1200, low, high, 1500]  # the window edges and the extremes
    props = ct_window_intensity_properties(low, high)
    out = CTNormalization(use_mask_for_norm=False, intensityproperties=props).run(img.copy())
    expected = (np.clip(img.astype(np.float64), low, high) - low) / (high - low)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    np.testing.assert_allclose(out[0, 0, :4], [0, 0, 1, 1], atol=1e-6)


def test_ct_window_properties_values():
    props = ct_window_intensity_properties(-325, 325)
    assert props["percentile_00_5"] == -325 and props["percentile_99_5"] == 325
    assert props["mean"] == -325 and props["std"] == 650
    assert props["median"] == 0 and props["min"] == -325 and props["max"] == 325


# ---------------------------------------------------------------- task_plans

def _plans() -> dict:
    props_a = ct_window_intensity_properties(-325, 325)
    props_b = {"mean": 300.0, "std": 80.0, "percentile_00_5": 10.0, "percentile_99_5": 900.0, "median": 290.0,
               "min": 0.0, "max": 1200.0}
    return {
        "dataset_name": "Dataset900_Synth",
        "plans_name": "UniSegPlansCPUDemo",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [40, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": props_a},
        "configurations": {
            "3d_fullres": {
                "data_identifier": "UniSegPlansCPUDemo_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [16, 32, 32],
                "median_image_size_in_voxels": [40, 64, 64],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                       "force_separate_z": None},
                "architecture": {"network_class_name": CPU_DEMO["network_class_name"],
                                 "arch_kwargs": copy.deepcopy(CPU_DEMO["arch_kwargs"]),
                                 "_kw_requires_import": list(CPU_DEMO["_kw_requires_import"])},
                "batch_dice": False,
                TASKS_KEY: {
                    "a": {"num_classes": 3, "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["CTNormalization"],
                          "use_mask_for_norm": [False], "median_image_size_in_voxels": [40, 64, 64],
                          "foreground_intensity_properties_per_channel": {"0": props_a},
                          "image_reader_writer": "SimpleITKIO"},
                    "b": {"num_classes": 2, "spacing": [3.0, 2.0, 2.0],
                          "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"],
                          "use_mask_for_norm": [True, False], "median_image_size_in_voxels": [20, 48, 48],
                          "foreground_intensity_properties_per_channel": {"0": props_b, "1": props_b},
                          "image_reader_writer": "NibabelIOWithReorient"},
                },
            }
        },
    }


def test_task_plans_overrides_per_task_settings():
    plans = _plans()
    original = copy.deepcopy(plans)
    b = task_plans(plans, "b")
    cfg = b["configurations"]["3d_fullres"]
    assert cfg["spacing"] == [3.0, 2.0, 2.0]
    assert cfg["normalization_schemes"] == ["ZScoreNormalization", "ZScoreNormalization"]
    assert cfg["use_mask_for_norm"] == [True, False]
    assert cfg["median_image_size_in_voxels"] == [20, 48, 48]
    assert b["foreground_intensity_properties_per_channel"] == \
        plans["configurations"]["3d_fullres"][TASKS_KEY]["b"]["foreground_intensity_properties_per_channel"]
    assert b["image_reader_writer"] == "NibabelIOWithReorient"
    # shared settings stay
    assert cfg["patch_size"] == [16, 32, 32] and cfg["batch_size"] == 2
    assert cfg["architecture"] == original["configurations"]["3d_fullres"]["architecture"]
    assert b["plans_name"] == "UniSegPlansCPUDemo"
    # the input is untouched
    assert plans == original


def test_task_plans_is_a_deep_copy():
    plans = _plans()
    original = copy.deepcopy(plans)
    b = task_plans(plans, "b")
    b["configurations"]["3d_fullres"]["spacing"][0] = 99.0
    b["configurations"]["3d_fullres"]["patch_size"][0] = 99
    b["foreground_intensity_properties_per_channel"]["0"]["mean"] = -1.0
    b["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][0] = 99
    assert plans == original
    a = task_plans(plans, "a")
    assert a["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    assert a["image_reader_writer"] == "SimpleITKIO"
    assert a["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]


def test_task_plans_unknown_task():
    with pytest.raises(KeyError) as info:
        task_plans(_plans(), "c")
    msg = str(info.value)
    assert "'c'" in msg and "['a', 'b']" in msg and "3d_fullres" in msg


def test_task_plans_unknown_configuration():
    with pytest.raises(KeyError) as info:
        task_plans(_plans(), "a", configuration="2d")
    assert "[]" in str(info.value) and "'2d'" in str(info.value)


def test_task_view_builds_nnunet_managers():
    registry = TaskRegistry([
        TaskSpec("a", "Dataset501_A", {"0": "CT"}, {"background": 0, "x": 1, "y": 2}),
        TaskSpec("b", "Dataset502_B", {"0": "T2", "1": "ADC"}, {"background": 0, "z": 1}),
    ])
    dataset_json = {"channel_names": {"0": "any"}, "labels": {"background": 0, "g": 1}, "file_ending": ".nii.gz",
                    "numTraining": 7}
    view = TaskView(_plans(), dataset_json, registry, "b", "3d_fullres")
    assert view.index == 1
    assert list(view.configuration_manager.spacing) == [3.0, 2.0, 2.0]
    assert view.configuration_manager.normalization_schemes == ["ZScoreNormalization", "ZScoreNormalization"]
    assert view.label_manager.all_labels == [0, 1]
    assert view.dataset_json == task_dataset_json(dataset_json, registry.task("b"))
    assert view.dataset_json["labels"] == {"background": 0, "z": 1}
    assert view.dataset_json["numTraining"] == 7
    assert view.condition == registry.condition("b")
    view_a = TaskView(_plans(), dataset_json, registry, 0, "3d_fullres")
    assert view_a.preprocessing_signature != view.preprocessing_signature
    assert TaskView(_plans(), dataset_json, registry, "a", "3d_fullres").preprocessing_signature == \
        view_a.preprocessing_signature


# ---------------------------------------------------------------- templates

def test_json_templates_equal_python_templates():
    files = sorted(glob.glob(os.path.join(PLANS_DIR, "*.json")))
    if not files:
        pytest.skip("no JSON templates in plans/")
    expected = {"UniSegPlans_paper.json": PAPER, "UniSegPlansCPUDemo.json": CPU_DEMO, "EchoPlans.json": ECHO,
                "HermesPlans.json": HERMES}
    names = {os.path.basename(f) for f in files}
    assert set(expected) <= names, f"plans/ lacks {sorted(set(expected) - names)}"
    for name, template in expected.items():
        with open(os.path.join(PLANS_DIR, name)) as f:
            on_disk = json.load(f)
        assert on_disk == json.loads(json.dumps(template)), name
    # every JSON file in plans/ is one of the Python templates
    python_templates = [json.loads(json.dumps(t)) for t in TEMPLATES.values()]
    for path in files:
        with open(path) as f:
            assert json.load(f) in python_templates, path


def test_load_template_by_name_and_path():
    t = load_template("paper")
    assert t == PAPER and t is not PAPER
    t["arch_kwargs"]["n_stages"] = 99
    assert PAPER["arch_kwargs"]["n_stages"] == 6  # a deep copy
    path = os.path.join(PLANS_DIR, "UniSegPlansCPUDemo.json")
    if os.path.isfile(path):
        assert load_template(path) == json.loads(json.dumps(CPU_DEMO))
    with pytest.raises(FileNotFoundError, match="cpu_demo"):
        load_template("no_such_template")


def test_cpu_demo_differs_only_in_size():
    assert CPU_DEMO["patch_size"] == [16, 32, 32]
    assert CPU_DEMO["arch_kwargs"]["n_stages"] == 4
    assert len(CPU_DEMO["arch_kwargs"]["decoder_kernel_sizes"]) == 3
    assert PAPER["arch_kwargs"]["n_stages"] == 6  # the update did not leak into PAPER
    assert PAPER["patch_size"] == [64, 192, 192]


def test_whole_slice_spacing_fits_the_largest_slice_into_the_patch():
    """M4oE's whole slices: in-plane spacing coarsened only where a case's slice would not fit the 2D patch; the
    resampled shape nnU-Net computes (round(shape x spacing / target)) then fits."""
    from nnunetv2_universal.collection.plan_and_preprocess import whole_slice_spacing
    shapes, spacings = [[90, 512, 512], [60, 400, 380]], [[2.5, 0.8, 0.8], [5.0, 0.7, 0.7]]
    target = whole_slice_spacing([3.0, 0.8, 0.8], shapes, spacings, (224, 224))
    assert target[0] == 3.0 and target[1] == pytest.approx(512 * 0.8 / 224)
    for shape, spacing in zip(shapes, spacings):
        assert all(round(n * s / t) <= 224 for n, s, t in zip(shape[1:], spacing[1:], target[1:]))
    assert whole_slice_spacing([3.0, 0.8, 0.8], [[10, 100, 100]], [[3.0, 0.8, 0.8]], (224, 224)) == [3.0, 0.8, 0.8]
    assert load_template("m4oe_swin")["whole_slices"] is True and load_template("m4oe_swin")["batch_size"] == 36
