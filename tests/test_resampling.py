"""Anti-aliased image downsampling (`--antialias`, or a plans' `resampling_fn_data`): a Gaussian of sigma =
(factor - 1) / 2 voxels along the axes that are downsampled, then nnU-Net's own resampling."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from scipy.ndimage import gaussian_filter

from nnunetv2_universal.collection.resampling import antialiasing_sigmas, resample_data_antialiased_to_shape
from nnunetv2_universal.collection.task_plans import TaskView
from nnunetv2_universal.registry import TaskRegistry, TaskSpec
from test_normalization import real_ct_slice

KWARGS = {"order": 3, "order_z": 0, "force_separate_z": None}


def test_sigmas_follow_the_downsampling_factor_per_axis():
    assert antialiasing_sigmas([1.0, 0.5, 0.25], [1.0, 1.0, 1.0]) == [0.0, 0.5, 1.5]
    assert antialiasing_sigmas([2.0, 2.0, 2.0], [1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]  # upsampling: untouched


def test_downsampling_a_real_ct_without_aliasing():
    """A real CT slice with fine texture added (period 2.5 voxels, far above the new Nyquist limit) downsampled 4x
    in-plane: nnU-Net's spline folds it into a coarse pattern, the anti-aliased image is close to the smoothed CT;
    segmentations and upsampling are exactly nnU-Net's."""
    ct = np.repeat(real_ct_slice(), 2, axis=0).astype(np.float32) / 1000  # (2, 128, 128)
    y, x = np.indices(ct.shape[1:])
    texture = (np.cos(2 * np.pi * x / 2.5) + np.cos(2 * np.pi * y / 2.5)).astype(np.float32)
    data = (ct + 0.25 * texture)[None]
    new_shape, current, target = (2, 32, 32), (1.0, 0.25, 0.25), (1.0, 1.0, 1.0)
    plain = resample_data_or_seg_to_shape(data, new_shape, current, target, is_seg=False, **KWARGS)
    smooth = resample_data_antialiased_to_shape(data, new_shape, current, target, is_seg=False, **KWARGS)
    expected = resample_data_or_seg_to_shape(gaussian_filter(data[0], [0, 1.5, 1.5], mode="nearest")[None],
                                             new_shape, current, target, is_seg=False, **KWARGS)
    np.testing.assert_allclose(smooth, expected, rtol=1e-5, atol=1e-5)
    truth = resample_data_or_seg_to_shape(gaussian_filter(ct, [0, 1.5, 1.5], mode="nearest")[None], new_shape,
                                          current, target, is_seg=False, **KWARGS)
    assert np.abs(smooth - truth).mean() < 0.01 < 0.1 < np.abs(plain - truth).mean()
    seg = (data > data.mean()).astype(np.uint8)
    np.testing.assert_array_equal(
        resample_data_antialiased_to_shape(seg, new_shape, current, target, is_seg=True, **KWARGS),
        resample_data_or_seg_to_shape(seg, new_shape, current, target, is_seg=True, **KWARGS))
    np.testing.assert_array_equal(
        resample_data_antialiased_to_shape(data, (2, 256, 256), current, (1.0, 0.125, 0.125), **KWARGS),
        resample_data_or_seg_to_shape(data, (2, 256, 256), current, (1.0, 0.125, 0.125), **KWARGS))


def _collection(resampling_fn_data: str = "resample_data_or_seg_to_shape") -> tuple:
    from test_task_plans import _plans
    plans = _plans()
    plans["configurations"]["3d_fullres"]["resampling_fn_data"] = resampling_fn_data
    registry = TaskRegistry([TaskSpec("a", "Dataset501_A", {"0": "CT"}, {"background": 0, "x": 1, "y": 2}),
                             TaskSpec("b", "Dataset502_B", {"0": "T2", "1": "ADC"}, {"background": 0, "z": 1})])
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "g": 1}, "file_ending": ".nii.gz",
                    "numTraining": 1}
    return plans, dataset_json, registry


def _view(resampling_fn_data: str = "resample_data_or_seg_to_shape") -> TaskView:
    plans, dataset_json, registry = _collection(resampling_fn_data)
    return TaskView(plans, dataset_json, registry, "a", "3d_fullres")


@pytest.mark.parametrize("antialias", [False, True])
def test_the_predictors_flag_reaches_the_selected_tasks_preprocessing(antialias):
    """--antialias sets UniversalPredictor.antialias; selecting a task hands it to that task's configuration."""
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    predictor = UniversalPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.collection_plans, predictor.collection_dataset_json, predictor.registry = _collection()
    predictor.views, predictor.antialias = {}, antialias
    predictor.select_task("a")
    resample = predictor.configuration_manager.resampling_fn_data
    assert resample.func is (resample_data_antialiased_to_shape if antialias else resample_data_or_seg_to_shape)
    assert resample.keywords == {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}


def test_the_prediction_flag_and_the_plans_name_reach_preprocessing(tmp_path):
    """A CT at 0.5 mm in-plane, preprocessed for task a (1 mm): with the flag (or the function named in the plans)
    the image is smoothed before nnU-Net's resampling; without, it is nnU-Net's preprocessing unchanged."""
    image = sitk.GetImageFromArray(np.repeat(real_ct_slice(), 4, axis=0))
    image.SetSpacing((0.5, 0.5, 1.0))
    sitk.WriteImage(image, str(tmp_path / "ct_0000.nii.gz"))

    def preprocess(view):
        pre = view.configuration_manager.preprocessor_class(verbose=False)
        return pre.run_case([str(tmp_path / "ct_0000.nii.gz")], None, view.plans_manager,
                            view.configuration_manager, view.dataset_json)[0]

    view = _view()
    stock = preprocess(view)
    view.configuration_manager.antialias = True
    flagged = preprocess(view)
    named = preprocess(_view("resample_data_antialiased_to_shape"))
    assert stock.shape == flagged.shape == (1, 4, 64, 64)
    np.testing.assert_array_equal(flagged, named)
    assert not np.allclose(flagged, stock)
    assert np.abs(np.diff(flagged, axis=-1)).mean() < np.abs(np.diff(stock, axis=-1)).mean()


def test_the_flag_refuses_a_resampling_it_does_not_wrap():
    view = _view("resample_torch_fornnunet")
    view.configuration_manager.antialias = True
    with pytest.raises(RuntimeError, match="--antialias wraps nnU-Net's resample_data_or_seg_to_shape"):
        view.configuration_manager.resampling_fn_data


def test_a_template_with_antialias_plans_the_anti_aliased_resampling():
    from nnunetv2_universal.collection.plan_and_preprocess import collection_plans, task_settings
    from nnunetv2_universal.collection.templates import load_template
    task = TaskSpec("a", "Dataset501_A", {"0": "CT"}, {"background": 0, "x": 1})
    registry = TaskRegistry([task])
    settings = {"a": task_settings(task, [3.0, 6.0, 6.0], [False], [20, 40, 40], "SimpleITKIO")}
    template = load_template("cpu_demo")
    stock = collection_plans("Dataset900_C", registry, settings, template)["configurations"]["3d_fullres"]
    smoothed = collection_plans("Dataset900_C", registry, settings, {**template, "antialias": True})
    assert stock["resampling_fn_data"] == "resample_data_or_seg_to_shape"
    config = smoothed["configurations"]["3d_fullres"]
    assert config["resampling_fn_data"] == "resample_data_antialiased_to_shape"
    assert config["resampling_fn_seg"] == stock["resampling_fn_seg"]  # segmentations as nnU-Net resamples them
    assert config["resampling_fn_data_kwargs"] == stock["resampling_fn_data_kwargs"]
