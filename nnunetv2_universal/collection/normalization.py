"""Normalisation schemes beyond nnU-Net's own, and the preprocessor and configuration manager that know them.

nnU-Net looks normalisation classes up inside its own package only. Every preprocessing the plugin runs (planning,
task views, stock `nnUNetv2_predict` through the task hook) uses `UniversalPreprocessor`, which resolves the
plugin's scheme names first and nnU-Net's otherwise. Its configuration manager also finds the plugin's resampling
functions (`collection/resampling.py`) by name.

- `ClippedZScoreNormalization` (registry scheme `ct_clip_zscore`): clip to the task's fixed window, then z-score
  over the clipped image itself: Hermes' reference recipe for CT ([-991, 500]; plans template key
  `ct_clip_zscore`). nnU-Net's CTNormalization clips to dataset percentiles and uses the dataset's statistics.
- `PercentileClippedZScoreNormalization` (scheme `zscore_p2_p98`): clip to the image's own 2nd and 98th
  percentiles, then z-score: the reference's recipe for MR and PET (template key `zscore_clip_p2_p98`).
"""
from __future__ import annotations

from functools import partial

import nnunetv2
import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ImageNormalization
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunetv2_universal.collection.resampling import PLUGIN_RESAMPLING, resample_data_antialiased_to_shape


class _ClipThenZScore(ImageNormalization):
    """clip(x, *bounds(x)), then (x - mean) / std of the clipped image; subclasses say where the bounds come from."""

    leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true = False

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        raise NotImplementedError

    def run(self, image: np.ndarray, seg: np.ndarray = None) -> np.ndarray:
        image = image.astype(self.target_dtype, copy=False)
        image = np.clip(image, *self.bounds(image))
        image -= image.mean()
        image /= max(float(image.std()), 1e-8)
        return image


class ClippedZScoreNormalization(_ClipThenZScore):
    """Bounds: the channel's fixed intensity properties `percentile_00_5` / `percentile_99_5` (written by the planner
    from the task's `ct_window`)."""

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        return self.intensityproperties["percentile_00_5"], self.intensityproperties["percentile_99_5"]


class PercentileClippedZScoreNormalization(_ClipThenZScore):
    """Bounds: the image's own 2nd and 98th percentiles."""

    percentiles = (2.0, 98.0)

    def bounds(self, image: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(image, self.percentiles)
        return low, high


PLUGIN_NORMALIZATIONS = {cls.__name__: cls for cls in (ClippedZScoreNormalization,
                                                       PercentileClippedZScoreNormalization)}


def normalization_class(scheme: str):
    cls = PLUGIN_NORMALIZATIONS.get(scheme) or recursive_find_python_class(
        join(nnunetv2.__path__[0], "preprocessing", "normalization"), scheme, "nnunetv2.preprocessing.normalization")
    if cls is None:
        raise RuntimeError(f"unknown normalisation scheme {scheme!r} (neither nnU-Net's nor the plugin's)")
    return cls


class UniversalPreprocessor(DefaultPreprocessor):
    """nnU-Net's DefaultPreprocessor that also knows the plugin's normalisation schemes."""

    def _normalize(self, data: np.ndarray, seg: np.ndarray, configuration_manager: ConfigurationManager,
                   foreground_intensity_properties_per_channel: dict) -> np.ndarray:
        for c, scheme in enumerate(configuration_manager.normalization_schemes):
            normalizer = normalization_class(scheme)(
                use_mask_for_norm=configuration_manager.use_mask_for_norm[c],
                intensityproperties=foreground_intensity_properties_per_channel[str(c)])
            data[c] = normalizer.run(data[c], seg[0])
        return data


class UniversalConfigurationManager(ConfigurationManager):
    """A task view's ConfigurationManager: nnU-Net's default preprocessor becomes UniversalPreprocessor, and the
    plugin's resampling functions are found by name (plans) or switched on for images (`antialias`, --antialias)."""

    antialias = False  # prediction: anti-aliased image downsampling for a model planned with nnU-Net's resampling

    @property
    def preprocessor_class(self):
        if self.preprocessor_name == DefaultPreprocessor.__name__:
            return UniversalPreprocessor
        return super().preprocessor_class

    @property
    def resampling_fn_data(self):
        name = self.configuration["resampling_fn_data"]
        if name not in PLUGIN_RESAMPLING and not self.antialias:
            return super().resampling_fn_data
        if name not in PLUGIN_RESAMPLING and name != resample_data_or_seg_to_shape.__name__:
            raise RuntimeError(f"--antialias wraps nnU-Net's {resample_data_or_seg_to_shape.__name__}; this "
                               f"configuration resamples images with {name}")
        return partial(resample_data_antialiased_to_shape, **self.configuration["resampling_fn_data_kwargs"])


def use_plugin_preprocessing(configuration_manager: ConfigurationManager) -> ConfigurationManager:
    """Make an existing ConfigurationManager (stock nnUNetv2_predict's) preprocess with UniversalPreprocessor."""
    configuration_manager.__class__ = UniversalConfigurationManager
    return configuration_manager
