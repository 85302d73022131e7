"""The echo paper's augmentation as a batchgeneratorsv2 pipeline: random left-right flip, in-plane rotation within
+-30 degrees and in-plane shear; the same transform for every frame of a clip, never a flip in time (frame 0 must
stay ED, and time keeps its direction). nnU-Net's own pipeline (scaling, noise, blur, brightness, contrast,
low resolution, gamma) is the `augmentation = "nnunet"` switch of the echo trainer.

Clips are (C, T, H, W) per sample; "in-plane" acts on (H, W).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

OUTSIDE = -1  # nnU-Net's label for voxels sampled outside the image (set to background later)


class InPlaneShear(BasicTransform):
    """Shear every frame by the same random matrix [[1, s_x], [s_y, 1]] (s in `shear`) about the frame centre.
    Images: bilinear, zeros outside; segmentations: nearest, OUTSIDE outside."""

    def __init__(self, shear: Tuple[float, float] = (-0.2, 0.2)):
        super().__init__()
        self.shear = shear

    def get_parameters(self, **data_dict) -> dict:
        sx, sy = np.random.uniform(*self.shear, size=2)
        return {"matrix": torch.tensor([[1.0, sx], [sy, 1.0]], dtype=torch.float32)}

    @staticmethod
    def _warp(volume: torch.Tensor, matrix: torch.Tensor, mode: str) -> torch.Tensor:
        frames = volume.reshape(-1, 1, *volume.shape[-2:]).float()  # every (channel, frame) the same way
        theta = torch.zeros(1, 2, 3)
        theta[0, :, :2] = matrix.flip(0).flip(1)  # grid_sample's (x, y) = (W, H): reverse both axes of (H, W)
        grid = F.affine_grid(theta, [1, 1, *frames.shape[-2:]], align_corners=False)
        warped = F.grid_sample(frames, grid.expand(frames.shape[0], -1, -1, -1), mode=mode, padding_mode="zeros",
                               align_corners=False)
        return warped.reshape(volume.shape)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return self._warp(img, params["matrix"], "bilinear").to(img.dtype)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        shifted = segmentation.float() - OUTSIDE  # outside -> 0 under zero padding, then back to OUTSIDE
        return (self._warp(shifted, params["matrix"], "nearest").round() + OUTSIDE).to(segmentation.dtype)


def paper_training_transforms(patch_size: Sequence[int], rotation: Tuple[float, float], shear: Tuple[float, float],
                              p_rotation: float, p_shear: float, flip_axis: Optional[int],
                              regions: Optional[List], ignore_label: Optional[int],
                              deep_supervision_scales=None) -> ComposeTransforms:
    """Rotation (radians) and shear in (H, W), the same for all frames; left-right flip along spatial axis
    `flip_axis` (None: no flip); then nnU-Net's label handling (outside -> background, regions incl. ignore)."""
    transforms = [
        Convert3DTo2DTransform(),  # time joins the channels: one in-plane transform per clip
        SpatialTransform(list(patch_size[1:]), patch_center_dist_from_border=0, random_crop=False,
                         p_rotation=p_rotation, rotation=rotation, p_scaling=0, border_mode_seg="constant",
                         padding_value_seg=OUTSIDE),
        Convert2DTo3DTransform(),
        RandomTransform(InPlaneShear(shear), apply_probability=p_shear),
    ]
    if flip_axis is not None:
        transforms.append(MirrorTransform(allowed_axes=(flip_axis,)))
    transforms.append(RemoveLabelTansform(OUTSIDE, 0))
    if regions is not None:
        transforms.append(ConvertSegmentationToRegionsTransform(
            regions=list(regions) + ([ignore_label] if ignore_label is not None else []), channel_in_seg=0))
    if deep_supervision_scales is not None:
        transforms.append(DownsampleSegForDSTransform(ds_scales=deep_supervision_scales))
    return ComposeTransforms(transforms)
