"""The pre-activation residual U-Net of Hermes-R (the reference's backbone), in d-n-a's encoder/decoder contract.

Encoder: a stem conv and one pre-activation basic block at full resolution, then per stage max-pooling by the
stage's stride and `blocks` basic blocks (the first changes the width; its shortcut is a pre-activation conv with
the block's kernel). Decoder: per stage, trilinear up-sampling of the coarser features to the skip's size,
concatenation [skip, up] and `blocks` basic blocks. Block: norm -> nonlin -> conv, twice, plus the shortcut.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import (get_matching_pool_op,
                                                                   maybe_convert_scalar_to_list)
from torch import nn

from nnunetv2_universal.networks.blocks import MultiChannelStem


class PreActivationBlock(nn.Module):
    """norm -> nonlin -> conv, twice, plus an identity (or a pre-activation conv when the width changes)."""

    def __init__(self, conv_op, in_channels: int, out_channels: int, kernel_size, conv_bias: bool, norm_op,
                 norm_op_kwargs, nonlin, nonlin_kwargs):
        super().__init__()
        padding = [(k - 1) // 2 for k in kernel_size]

        def act_conv(cin, cout):
            return nn.Sequential(norm_op(cin, **(norm_op_kwargs or {})), nonlin(**(nonlin_kwargs or {})),
                                 conv_op(cin, cout, kernel_size, padding=padding, bias=conv_bias))

        self.body = nn.Sequential(act_conv(in_channels, out_channels), act_conv(out_channels, out_channels))
        self.shortcut = nn.Identity() if in_channels == out_channels else act_conv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class PreActivationEncoder(nn.Module):
    """`stem` (MultiChannelStem), `stages`, `output_channels`, `strides`, as d-n-a's encoders."""

    def __init__(self, input_channels: int, features_per_stage: Sequence[int], conv_op, kernel_sizes, strides,
                 n_blocks_per_stage: Sequence[int], conv_bias: bool, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs,
                 stem_channels: Sequence[int] = ()):
        super().__init__()
        n = len(features_per_stage)
        kernels = [maybe_convert_scalar_to_list(conv_op, k) for k in
                   (kernel_sizes if isinstance(kernel_sizes, (list, tuple)) else [kernel_sizes] * n)]
        self.strides = [maybe_convert_scalar_to_list(conv_op, s) for s in strides]
        self.output_channels = list(features_per_stage)
        blocks = n_blocks_per_stage if isinstance(n_blocks_per_stage, (list, tuple)) else [n_blocks_per_stage] * n
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        self.stem = MultiChannelStem(conv_op, stem_channels or [input_channels], features_per_stage[0], kernels[0], 1,
                                     conv_bias)
        pool = get_matching_pool_op(conv_op, pool_type="max")
        stages, previous = [], features_per_stage[0]
        for i, (c, k, s, b) in enumerate(zip(features_per_stage, kernels, self.strides, blocks)):
            ops = [pool(s, s)] if max(s) > 1 else []
            ops += [PreActivationBlock(conv_op, previous if j == 0 else c, c, k, conv_bias, **norm)
                    for j in range(max(1, b))]
            stages.append(nn.Sequential(*ops))
            previous = c
        self.stages = nn.ModuleList(stages)
        self.conv_op = conv_op

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        size, total = np.array(input_size), np.int64(0)
        for c, s in zip(self.output_channels, self.strides):
            size = size // np.array(s)
            total += np.int64(4 * c * np.prod(size))  # two convs per block, pre-activation doubles the maps
        return total


class PreActivationDecoder(nn.Module):
    """Trilinear up-sampling + [skip, up] + basic blocks per stage; `deep_supervision` as d-n-a's decoders (the
    owning network supplies the heads)."""

    def __init__(self, encoder: PreActivationEncoder, n_blocks_per_stage: Sequence[int], deep_supervision: bool,
                 conv_bias: bool, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs, kernel_sizes=None):
        super().__init__()
        channels = encoder.output_channels
        n = len(channels) - 1
        blocks = n_blocks_per_stage if isinstance(n_blocks_per_stage, (list, tuple)) else [n_blocks_per_stage] * n
        kernels = [maybe_convert_scalar_to_list(encoder.conv_op, 3)] * n if kernel_sizes is None else \
            [maybe_convert_scalar_to_list(encoder.conv_op, k) for k in kernel_sizes]
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        stages = []
        for s in range(n):
            low, skip = channels[-(s + 1)], channels[-(s + 2)]
            stages.append(nn.Sequential(*[PreActivationBlock(encoder.conv_op, skip + low if j == 0 else skip, skip,
                                                             kernels[s], conv_bias, **norm)
                                          for j in range(max(1, blocks[s]))]))
        self.stages = nn.ModuleList(stages)
        self.deep_supervision = deep_supervision
        self.output_channels = channels

    def step(self, s: int, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(low, size=skip.shape[2:], mode="trilinear" if low.ndim == 5 else "bilinear",
                           align_corners=True)
        return self.stages[s](torch.cat((skip, up), 1))

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        return np.int64(0)  # counted with the encoder's estimate (planning does not use this network)

