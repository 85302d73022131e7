"""Building blocks shared by the universal networks, on top of dynamic-network-architectures.

- `MultiChannelStem`: one first convolution per supported input-channel count, picked by the input's channels.
- `GeneratedConvHead`: a stack of 1x1(x1) convs whose weights come from a controller (DoDNet-style dynamic heads).
- `ConditionedUNetDecoder`: d-n-a's U-Net decoder contract (`stages`, `transpconvs`, `seg_layers`,
  `deep_supervision`, outputs highest resolution first) that accepts extra channels at the bottleneck (a task
  prompt, prior tokens, ...) and exposes the reference variants (decoder kernels, transpconv/head biases).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import get_matching_convtransp, maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn
from torch.nn.modules.conv import _ConvNd


class UnsupportedChannelCountError(ValueError):
    """The input has a channel count for which the network has no stem."""


class MultiChannelStem(nn.Module):
    """First conv of the encoder with one weight set per input-channel count (UniSeg: 1, 2 and 4).

    In: (B, C, *spatial) with C in `channel_counts`; out: (B, output_channels, *spatial / stride).
    Parameters are named `conv_<C>` (the reference's names) so checkpoints map one to one.
    """

    def __init__(self, conv_op: Type[_ConvNd], channel_counts: Sequence[int], output_channels: int,
                 kernel_size, stride, bias: bool, padding=None):
        super().__init__()
        self.channel_counts = tuple(sorted({int(c) for c in channel_counts}))
        if not self.channel_counts or min(self.channel_counts) < 1:
            raise ValueError(f"stem channel counts must be positive integers, got {channel_counts}")
        kernel_size = maybe_convert_scalar_to_list(conv_op, kernel_size)
        for c in self.channel_counts:
            setattr(self, f"conv_{c}", conv_op(c, output_channels, kernel_size, stride, bias=bias,
                                               padding=[(k - 1) // 2 for k in kernel_size] if padding is None
                                               else padding))
        self.out_channels = output_channels

    def conv_for(self, num_channels: int) -> _ConvNd:
        if num_channels not in self.channel_counts:
            raise UnsupportedChannelCountError(
                f"input has {num_channels} channel(s); this network has stems for {list(self.channel_counts)} "
                f"channel(s) only")
        return getattr(self, f"conv_{num_channels}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv_for(x.shape[1])
        out = conv(x)
        if self.training and torch.is_grad_enabled():
            # Touch the unused stems with weight 0 so DDP sees every parameter take part in each step.
            out = out + sum(p.sum() for c in self.channel_counts if c != x.shape[1]
                            for p in getattr(self, f"conv_{c}").parameters()) * 0.0
        return out


def install_stem(encoder: PlainConvEncoder, channel_counts: Sequence[int], bias: bool) -> MultiChannelStem:
    """Replace the encoder's first convolution (and its alias inside `all_modules`) by a MultiChannelStem."""
    first = encoder.stages[0][-1].convs[0]
    old = first.conv
    stem = MultiChannelStem(type(old), channel_counts, old.out_channels, old.kernel_size, old.stride, bias)
    first.conv = stem
    first.all_modules[0] = stem
    return stem


class ConditionedUNetDecoder(nn.Module):
    """U-Net decoder (d-n-a layout) whose first transposed conv takes `extra_bottleneck_channels` more inputs.

    forward(skips) expects the encoder skips with the bottleneck (already concatenated with the extra channels)
    last. Returns a list of logits, highest resolution first, if `deep_supervision`, else the highest only.
    `decoder_kernel_sizes` (lowest resolution first) defaults to the same-resolution encoder kernel (v2 style).
    """

    def __init__(self, encoder: PlainConvEncoder, num_classes: int,
                 n_conv_per_stage: Union[int, Sequence[int]], deep_supervision: bool,
                 extra_bottleneck_channels: int = 0,
                 decoder_kernel_sizes: Optional[Sequence] = None,
                 transpconv_bias: bool = True, seg_bias: bool = True, extra_head_channels: int = 0):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        channels = list(encoder.output_channels)
        n_up = len(channels) - 1
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * n_up
        if len(n_conv_per_stage) != n_up:
            raise ValueError(f"n_conv_per_stage_decoder needs {n_up} entries, got {len(n_conv_per_stage)}")
        if decoder_kernel_sizes is None:
            decoder_kernel_sizes = [encoder.kernel_sizes[-(s + 2)] for s in range(n_up)]
        if len(decoder_kernel_sizes) != n_up:
            raise ValueError(f"decoder_kernel_sizes needs {n_up} entries, got {len(decoder_kernel_sizes)}")
        transpconv_op = get_matching_convtransp(conv_op=encoder.conv_op)
        self.encoder_strides = [list(s) for s in encoder.strides]
        self.skip_channels = channels[:-1]

        stages, transpconvs, seg_layers = [], [], []
        for s in range(n_up):
            below = channels[-(s + 1)] + (extra_bottleneck_channels if s == 0 else 0)
            skip = channels[-(s + 2)]
            stride = encoder.strides[-(s + 1)]
            transpconvs.append(transpconv_op(below, skip, stride, stride, bias=transpconv_bias))
            stages.append(StackedConvBlocks(n_conv_per_stage[s], encoder.conv_op, 2 * skip, skip,
                                            decoder_kernel_sizes[s], 1, encoder.conv_bias, encoder.norm_op,
                                            encoder.norm_op_kwargs, encoder.dropout_op, encoder.dropout_op_kwargs,
                                            encoder.nonlin, encoder.nonlin_kwargs))
            seg_layers.append(encoder.conv_op(skip + extra_head_channels, num_classes, 1, 1, 0, bias=seg_bias))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: List[torch.Tensor], head_extra: Optional[torch.Tensor] = None,
                modulate: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None):
        """`head_extra` (if the decoder has extra head channels): a map resized to each head's resolution and
        concatenated to the features the head sees (task information at the end of the decoder).
        `modulate(stage, x)`: applied to each stage's output (e.g. a per-task FiLM)."""
        x = skips[-1]
        outputs = []
        for s in range(len(self.stages)):
            x = self.transpconvs[s](x)
            x = self.stages[s](torch.cat((x, skips[-(s + 2)]), 1))
            if modulate is not None:
                x = modulate(s, x)
            if self.deep_supervision or s == len(self.stages) - 1:
                head_in = x if head_extra is None else torch.cat(
                    (x, nn.functional.interpolate(head_extra, size=x.shape[2:], mode="trilinear"
                                                  if x.ndim == 5 else "bilinear", align_corners=False)), 1)
                outputs.append(self.seg_layers[s](head_in))
        outputs = outputs[::-1]
        return outputs if self.deep_supervision else outputs[0]

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        """Feature-map voxels of the decoder for an encoder input of `input_size` (for nnU-Net's VRAM estimate)."""
        sizes = []
        for stride in self.encoder_strides[:-1]:
            input_size = [i // j for i, j in zip(input_size, stride)]
            sizes.append(input_size)
        total = np.int64(0)
        for s in range(len(self.stages)):
            size = sizes[-(s + 1)]
            total += self.stages[s].compute_conv_feature_map_size(size)
            total += np.prod([self.skip_channels[-(s + 1)], *size], dtype=np.int64)
            if self.deep_supervision or s == len(self.stages) - 1:
                total += np.prod([self.num_classes, *size], dtype=np.int64)
        return total


class GeneratedConvHead:
    """1x1(x1) convs (ReLU between, none after the last) whose weights and biases are generated per instance.

    `layer_shapes`: (out, in) per layer, e.g. [(8, 8), (8, 8), (1, 8)] (153 parameters, CLIP-Driven's head).
    apply(features (N, C, *spatial), params (N, num_params)) -> (N, out_last, *spatial): the N instances run as
    one grouped convolution. No parameters of its own (the controller that makes `params` owns them).
    """

    def __init__(self, layer_shapes: Sequence[Sequence[int]]):
        self.layer_shapes = [tuple(int(v) for v in s) for s in layer_shapes]
        self.num_params = sum(o * i + o for o, i in self.layer_shapes)

    def apply(self, features: torch.Tensor, params: torch.Tensor, instances_per_input: int = 1) -> torch.Tensor:
        """`instances_per_input` k > 1: features (N / k, C, *spatial) are shared by k consecutive instances (the
        classes of one sample). The first layer then reads them once (groups = N / k, k * out channels each)
        instead of from k materialised copies, which at full resolution cost more than the head itself."""
        n, k, spatial = params.shape[0], instances_per_input, features.shape[2:]
        if params.shape != (n, self.num_params) or features.shape[0] * k != n:
            raise ValueError(f"expected generated parameters of shape ({features.shape[0] * k}, {self.num_params}), "
                             f"got {tuple(params.shape)}")
        conv = F.conv3d if len(spatial) == 3 else F.conv2d
        x = features.reshape(1, -1, *spatial)
        offset = 0
        for i, (out_c, in_c) in enumerate(self.layer_shapes):
            weight = params[:, offset:offset + out_c * in_c].reshape(n * out_c, in_c, *[1] * len(spatial))
            offset += out_c * in_c
            bias = params[:, offset:offset + out_c].reshape(n * out_c)
            offset += out_c
            x = conv(x, weight, bias, groups=n // k if i == 0 else n)
            if i < len(self.layer_shapes) - 1:
                x = F.relu(x)
        return x.reshape(n, -1, *spatial)


def touch_with_zero(output: torch.Tensor, modules) -> torch.Tensor:
    """output + 0 * (sum of the modules' parameters), in training with grad only: parameters a step does not use
    (other tasks' heads, experts a sample is not routed to) still get a (zero) gradient, as DDP requires."""
    if not (torch.is_grad_enabled() and any(p.requires_grad for m in modules for p in m.parameters())):
        return output
    return output + sum(p.sum() for m in modules for p in m.parameters()) * 0.0
