"""Hermes' reference normalisation (CT clipped to [-991, 500], MR / PET to the image's 2nd / 98th percentiles, then
z-score per image) as plans-template settings, and the plugin preprocessor that runs it in planning, in the plugin's
predictor and in stock nnUNetv2_predict."""
from __future__ import annotations

import copy

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from nnunetv2_universal.collection.normalization import (ClippedZScoreNormalization,
                                                         PercentileClippedZScoreNormalization,
                                                         UniversalConfigurationManager, UniversalPreprocessor)
from nnunetv2_universal.collection.plan_and_preprocess import task_settings, with_template_normalization
from nnunetv2_universal.collection.task_plans import TASKS_KEY, TaskView, ct_window_intensity_properties
from nnunetv2_universal.collection.templates import load_template
from nnunetv2_universal.registry import TaskRegistry, TaskSpec


def real_ct_slice() -> np.ndarray:
    """pydicom's CT test image in Hounsfield units (air, soft tissue, bone)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    return (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)[None]


def test_clip_then_z_score_over_the_clipped_image():
    hu = real_ct_slice()
    out = ClippedZScoreNormalization(False, ct_window_intensity_properties(-991, 500)).run(hu.copy())
    clipped = np.clip(hu.astype(np.float64), -991, 500)
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), rtol=1e-4, atol=1e-4)
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-4
    assert hu.max() > 500  # the clip matters on this image


def test_percentile_clip_then_z_score_for_mr_and_pet():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(8, 16, 16)).astype(np.float32)
    image[0, 0, 0] = 1e5  # an outlier the clip removes
    out = PercentileClippedZScoreNormalization(False, {}).run(image.copy())
    clipped = np.clip(image.astype(np.float64), *np.percentile(image, (2, 98)))
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), rtol=1e-4, atol=1e-4)


def test_the_hermes_template_normalises_as_the_reference():
    template = load_template("hermes")
    assert template["ct_clip_zscore"] == [-991.0, 500.0] and template["zscore_clip_p2_p98"] is True
    petct = TaskSpec("petct", "Dataset503_P", {"0": "CT", "1": "PET"}, {"background": 0, "lesion": 1})
    changed = with_template_normalization(petct, template)
    assert changed.normalization == ["ct_clip_zscore", "zscore_p2_p98"] and changed.ct_window == [-991.0, 500.0]
    assert petct.normalization == ["ct_window", "zscore"]  # the registry's task is unchanged
    assert with_template_normalization(petct, load_template("paper")) is petct
    settings = task_settings(changed, [1, 1, 1], [True, True], [8, 8, 8], "SimpleITKIO",
                             {"1": {"mean": 0.0, "std": 1.0}})
    assert settings["normalization_schemes"] == ["ClippedZScoreNormalization", "PercentileClippedZScoreNormalization"]
    assert settings["use_mask_for_norm"] == [False, False]  # as the reference: the whole image
    window = settings["foreground_intensity_properties_per_channel"]["0"]
    assert (window["percentile_00_5"], window["percentile_99_5"]) == (-991.0, 500.0)


def _plans_with(scheme: str, low: float, high: float) -> dict:
    from test_task_plans import _plans
    plans = _plans()
    props = ct_window_intensity_properties(low, high)
    for config in (plans["configurations"]["3d_fullres"], plans["configurations"]["3d_fullres"][TASKS_KEY]["a"]):
        config["normalization_schemes"] = [scheme]
    plans["configurations"]["3d_fullres"][TASKS_KEY]["a"]["foreground_intensity_properties_per_channel"] = \
        {"0": props}
    return plans


def test_a_task_view_preprocesses_a_real_ct_with_the_plugin_scheme(tmp_path):
    registry = TaskRegistry([
        TaskSpec("a", "Dataset501_A", {"0": "CT"}, {"background": 0, "x": 1, "y": 2}),
        TaskSpec("b", "Dataset502_B", {"0": "T2", "1": "ADC"}, {"background": 0, "z": 1}),
    ])
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "g": 1}, "file_ending": ".nii.gz",
                    "numTraining": 1}
    hu = np.repeat(real_ct_slice(), 4, axis=0)  # four slices, (z, y, x)
    image = sitk.GetImageFromArray(hu)
    sitk.WriteImage(image, str(tmp_path / "ct_0000.nii.gz"))
    view = TaskView(_plans_with("ClippedZScoreNormalization", -991, 500), dataset_json, registry, "a", "3d_fullres")
    assert isinstance(view.configuration_manager, UniversalConfigurationManager)
    preprocessor = view.configuration_manager.preprocessor_class(verbose=False)
    assert isinstance(preprocessor, UniversalPreprocessor)
    data, _, _ = preprocessor.run_case([str(tmp_path / "ct_0000.nii.gz")], None, view.plans_manager,
                                       view.configuration_manager, view.dataset_json)
    clipped = np.clip(hu.astype(np.float64), -991, 500)
    assert data.shape == (1, *hu.shape)
    np.testing.assert_allclose(data[0], (clipped - clipped.mean()) / clipped.std(), rtol=1e-4, atol=1e-4)


def test_stock_predict_preprocesses_with_the_plugin_preprocessor(monkeypatch):
    """nnUNetv2_predict builds the network through the trainer; the task hook switches nnU-Net's managers."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from torch import nn

    from nnunetv2_universal.inference.stock_predict import apply_task_from_environment
    plans = _plans_with("ClippedZScoreNormalization", -991, 500)
    plans_manager = PlansManager(copy.deepcopy(plans))
    configuration_manager = plans_manager.get_configuration("3d_fullres")
    monkeypatch.setenv("nnUNet_universal_task", "a")
    apply_task_from_environment(nn.Identity(), plans_manager, configuration_manager)
    assert configuration_manager.preprocessor_class is UniversalPreprocessor
    assert configuration_manager.normalization_schemes == ["ClippedZScoreNormalization"]
