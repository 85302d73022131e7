"""DoDNet-style baseline (Zhang et al., CVPR 2021) on UniSeg's U-Net, for the paper's Table 2 comparison.

A one-hot task code and the globally pooled bottleneck go through a controller that generates the weights of a
small dynamic head (three 1x1x1 convs, 8 -> 8 -> 8 -> num_classes) applied to the full-resolution decoder
features (reduced to 8 channels). DoDNet has no deep supervision; with nnU-Net's, every level is task-conditioned:
the same generated head runs on each decoder stage's features (each stage reduced to 8 channels by its own
norm-nonlin-1x1 conv), so tasks that share output channels never give one static head contradictory targets.
Condition: `task`.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.blocks import GeneratedConvHead
from nnunetv2_universal.networks.uniseg import _build_stemmed_unet, _StemmedUNetParts


class DoDNetNetwork(_StemmedUNetParts, ConditionedNetwork):
    """In (B, C, *patch); out logits (B, num_classes, *patch) (list over deep-supervision levels if enabled)."""

    HEAD_CHANNELS = 8

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op, kernel_sizes, strides,
                 n_conv_per_stage, num_classes: int, n_conv_per_stage_decoder, num_tasks: int, patch_size=None,
                 stem_channels=None, conv_bias: bool = True, norm_op=None, norm_op_kwargs=None, dropout_op=None,
                 dropout_op_kwargs=None, nonlin=None, nonlin_kwargs=None, deep_supervision: bool = False,
                 decoder_kernel_sizes=None, transpconv_bias: bool = True, seg_bias: bool = True, **_ignored):
        super().__init__()
        self.num_tasks, self.num_classes = num_tasks, num_classes
        _build_stemmed_unet(self, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                            n_conv_per_stage, num_classes, n_conv_per_stage_decoder, stem_channels, conv_bias,
                            norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                            deep_supervision, decoder_kernel_sizes, transpconv_bias, seg_bias,
                            extra_bottleneck_channels=0)
        h = self.HEAD_CHANNELS

        def reduce(channels):
            return nn.Sequential(norm_op(channels, **(norm_op_kwargs or {})), nonlin(**(nonlin_kwargs or {})),
                                 conv_op(channels, h, 1))

        self.precls = reduce(self.encoder.output_channels[0])
        # one reduction per lower decoder stage (deep supervision), highest resolution first
        self.level_precls = nn.ModuleList(reduce(c) for c in self.encoder.output_channels[1:-1])
        self.decoder.seg_layers = nn.ModuleList()  # every head is generated
        self.head = GeneratedConvHead([(h, h), (h, h), (num_classes, h)])
        self.controller = conv_op(self.encoder.output_channels[-1] + num_tasks, self.head.num_params, 1)

    def forward_tasks(self, x: torch.Tensor, conditions: Sequence[ConditionLike]) -> List:
        skips = self.encoder(x)
        pooled = skips[-1].mean(dim=tuple(range(2, skips[-1].ndim)), keepdim=True)
        decoder = self.decoder
        outputs, features = [], None
        for c in conditions:
            task = self.resolve_condition(c).task
            if task is None or not 0 <= task < self.num_tasks:
                raise ValueError(f"DoDNetNetwork needs condition.task in 0..{self.num_tasks - 1}, got {task}")
            code = torch.zeros(x.shape[0], self.num_tasks, *pooled.shape[2:], device=x.device, dtype=pooled.dtype)
            code[:, task] = 1
            params = self.controller(torch.cat((pooled, code), 1)).flatten(1)
            if features is None:
                features = self._decode(decoder, skips)
            dynamic = self.head.apply(self.precls(features[0]), params)
            if decoder.deep_supervision:
                dynamic = [dynamic] + [self.head.apply(reduce(f), params)
                                       for reduce, f in zip(self.level_precls, features[1:])]
            outputs.append(dynamic)
        return outputs

    @staticmethod
    def _decode(decoder, skips) -> List[torch.Tensor]:
        """Every decoder stage's features, highest resolution first."""
        x, features = skips[-1], []
        for s in range(len(decoder.stages)):
            x = decoder.stages[s](torch.cat((decoder.transpconvs[s](x), skips[-(s + 2)]), 1))
            features.append(x)
        return features[::-1]

    def forward(self, x: torch.Tensor, condition: ConditionLike = None):
        return self.hide_invisible_classes(self.forward_tasks(x, [self.resolve_condition(condition)])[0])

