"""Anti-aliased downsampling of images (not segmentations) for inputs much finer than a task's spacing.

nnU-Net resamples images with a third-order spline and no smoothing. Within one dataset the factors are small, but a
universal model also meets images far finer than its tasks' spacing (a 0.8 mm CT for a task planned at 6 mm in the
CPU plans, a 0.5 mm MR for 1.5 mm), and their downsampled noise and texture then differ from what the network was
trained on (docs/explanation/learning-the-condition.md: on the real benchmark's second patient, downsampled about
6x, smoothing lowers the liver task's cross-activation in every seed).

`resample_data_antialiased_to_shape` smooths each channel with a Gaussian of sigma = (factor - 1) / 2 voxels along
every axis whose spacing grows by `factor` > 1 (the usual anti-aliasing rule), then runs nnU-Net's own
`resample_data_or_seg_to_shape`. Used where a configuration's `resampling_fn_data` names it (plans), or at
prediction with `--antialias` (the plugin's predictor) for models trained with nnU-Net's resampling.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from scipy.ndimage import gaussian_filter


def antialiasing_sigmas(current_spacing: Sequence[float], new_spacing: Sequence[float]) -> list:
    """Gaussian sigma per axis, in voxels of the input: (new / current - 1) / 2 where the spacing grows, else 0."""
    return [max(0.0, (float(n) / float(c) - 1.0) / 2.0) for c, n in zip(current_spacing, new_spacing)]


def resample_data_antialiased_to_shape(data: Union[torch.Tensor, np.ndarray], new_shape, current_spacing,
                                       new_spacing, is_seg: bool = False, **kwargs) -> np.ndarray:
    """nnU-Net's `resample_data_or_seg_to_shape` (same arguments) after an anti-aliasing Gaussian on images;
    segmentations are resampled unchanged."""
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    sigmas = antialiasing_sigmas(current_spacing, new_spacing)
    if not is_seg and any(sigmas):
        data = np.stack([gaussian_filter(c.astype(np.float32, copy=False), sigmas, mode="nearest") for c in data])
    return resample_data_or_seg_to_shape(data, new_shape, current_spacing, new_spacing, is_seg=is_seg, **kwargs)


PLUGIN_RESAMPLING = {f.__name__: f for f in (resample_data_antialiased_to_shape,)}
