"""UniSeg (Ye et al., MICCAI 2023): a plain 3D U-Net with a learnable universal prompt and a FUSE module.

The bottleneck features are concatenated with the universal prompt (1, T, *bottleneck_size); FUSE (three
conv-norm-nonlin blocks, (C+T) -> (C+T)//4 -> (C+T)//4 -> T) turns them into T image-dependent task prompts;
the prompt of the requested task (one channel) is concatenated to the bottleneck and fed to the decoder.
Multi-modality is handled by one input stem per channel count. Logits have `num_classes` channels (the largest
task's class count); callers slice them to the task's classes.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.blocks import ConditionedUNetDecoder, MultiChannelStem, install_stem


def prompt_spatial_size(patch_size: Sequence[int], strides: Sequence) -> List[int]:
    """Bottleneck size for `patch_size`; the prompt is tied to it, so the patch must divide evenly."""
    total = np.prod(np.array([np.broadcast_to(s, (len(patch_size),)) for s in strides]), axis=0)
    if any(p % t for p, t in zip(patch_size, total)):
        raise ValueError(f"patch size {list(patch_size)} is not divisible by the total stride {total.tolist()}; "
                         f"UniSeg's prompt needs an exact bottleneck size")
    return [int(p // t) for p, t in zip(patch_size, total)]


def _build_stemmed_unet(module: nn.Module, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes,
                        strides, n_conv_per_stage, num_classes, n_conv_per_stage_decoder, stem_channels, conv_bias,
                        norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                        deep_supervision, decoder_kernel_sizes, transpconv_bias, seg_bias,
                        extra_bottleneck_channels: int, extra_head_channels: int = 0) -> List[List[int]]:
    """Give `module` UniSeg's U-Net parts (`encoder` with a multi-channel `stem`, `decoder`); returns the strides."""
    if isinstance(strides, int):
        strides = [strides] * n_stages
    module.encoder = PlainConvEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                      n_conv_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                      dropout_op_kwargs, nonlin, nonlin_kwargs, return_skips=True)
    install_stem(module.encoder, stem_channels or [input_channels], conv_bias)
    module.decoder = ConditionedUNetDecoder(module.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision,
                                            extra_bottleneck_channels=extra_bottleneck_channels,
                                            decoder_kernel_sizes=decoder_kernel_sizes,
                                            transpconv_bias=transpconv_bias, seg_bias=seg_bias,
                                            extra_head_channels=extra_head_channels)
    return [maybe_convert_scalar_to_list(conv_op, s) for s in strides]


PROMPT_MODES = ("universal", "fixed", "per_task")
PROMPT_POSITIONS = ("bottleneck", "output")


class _StemmedUNetParts:
    """What every network built by _build_stemmed_unet shares: stem access, VRAM estimate, nnU-Net's init."""

    @property
    def stem(self) -> MultiChannelStem:
        """The multi-channel first conv (a view, not a second registration: state-dict names stay d-n-a's)."""
        return self.encoder.stages[0][-1].convs[0].conv

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He init (negative slope 1e-2) for convs; a prompt keeps its N(0, 1) init."""
        InitWeights_He(1e-2)(module)


class UniSegNetwork(_StemmedUNetParts, ConditionedNetwork):
    """UniSeg on dynamic-network-architectures: in (B, C, *patch) with C a stem channel count, out logits
    (B, num_classes, *patch) (a list over deep-supervision levels, highest resolution first, if enabled).

    Condition: `task` (index into the registry). Keyword arguments follow PlainConvUNet plus `num_tasks`,
    `patch_size`, `stem_channels` and the reference's decoder details (`decoder_kernel_sizes`,
    `transpconv_bias`, `seg_bias`).
    """

    def __init__(self,
                 input_channels: int,
                 n_stages: int,
                 features_per_stage: Union[int, Sequence[int]],
                 conv_op: Type[_ConvNd],
                 kernel_sizes: Union[int, Sequence],
                 strides: Union[int, Sequence],
                 n_conv_per_stage: Union[int, Sequence[int]],
                 num_classes: int,
                 n_conv_per_stage_decoder: Union[int, Sequence[int]],
                 num_tasks: int,
                 patch_size: Sequence[int],
                 stem_channels: Optional[Sequence[int]] = None,
                 conv_bias: bool = True,
                 norm_op: Optional[Type[nn.Module]] = None,
                 norm_op_kwargs: Optional[dict] = None,
                 dropout_op: Optional[Type[_DropoutNd]] = None,
                 dropout_op_kwargs: Optional[dict] = None,
                 nonlin: Optional[Type[nn.Module]] = None,
                 nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False,
                 decoder_kernel_sizes: Optional[Sequence] = None,
                 transpconv_bias: bool = True,
                 seg_bias: bool = True,
                 fuse_reduction: int = 4,
                 prompt_mode: str = "universal",
                 prompt_position: str = "bottleneck",
                 decoder_film: bool = False,
                 prompt_gain: Union[float, str, None] = None):
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if prompt_mode not in PROMPT_MODES or prompt_position not in PROMPT_POSITIONS:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES} and prompt_position one of "
                             f"{PROMPT_POSITIONS}, got {prompt_mode!r}, {prompt_position!r}")
        self.prompt_mode, self.prompt_position = prompt_mode, prompt_position
        at_bottleneck = prompt_position == "bottleneck"
        self.num_tasks = num_tasks
        self.num_classes = num_classes
        strides = _build_stemmed_unet(self, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes,
                                      strides, n_conv_per_stage, num_classes, n_conv_per_stage_decoder,
                                      stem_channels, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                      dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision,
                                      decoder_kernel_sizes, transpconv_bias, seg_bias,
                                      extra_bottleneck_channels=int(at_bottleneck),
                                      extra_head_channels=int(not at_bottleneck))
        prompt_shape = (1, num_tasks, *prompt_spatial_size(patch_size, strides))
        if prompt_mode == "fixed":  # ablation: a zero prompt that is never updated
            self.register_buffer("prompt", torch.zeros(prompt_shape))
        else:
            self.prompt = nn.Parameter(torch.randn(prompt_shape))
        fuse_in = self.encoder.output_channels[-1] + num_tasks
        hidden = fuse_in // fuse_reduction
        self.fuse = nn.Sequential(*[
            ConvDropoutNormReLU(conv_op, c_in, c_out, 3, 1, True, norm_op, norm_op_kwargs, None, None, nonlin,
                                nonlin_kwargs)
            for c_in, c_out in ((fuse_in, hidden), (hidden, hidden), (hidden, num_tasks))]) \
            if prompt_mode != "per_task" else None
        # Opt-in, beyond the paper: the selected task prompt times a gain (None: 1, the paper; "auto":
        # sqrt(bottleneck channels), so the one prompt channel weighs as much as all image channels together).
        self.prompt_gain = 1.0 if prompt_gain is None else float(np.sqrt(self.encoder.output_channels[-1])) \
            if prompt_gain == "auto" else float(prompt_gain)
        # Opt-in, beyond the paper: per-task scale and shift of every decoder stage's output channels.
        self.film = TaskFiLM(num_tasks, self.decoder.skip_channels[::-1]) if decoder_film else None

    def task_prompts(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """(B, T, *bottleneck_size) image-dependent prompts, one channel per task."""
        if bottleneck.shape[2:] != self.prompt.shape[2:]:
            raise ValueError(f"bottleneck size {list(bottleneck.shape[2:])} differs from the prompt's "
                             f"{list(self.prompt.shape[2:])}: UniSeg must see patches of the training patch size")
        prompt = self.prompt.expand(bottleneck.shape[0], *self.prompt.shape[1:])
        if self.fuse is None:  # "multiple prompts" ablation: each task's own learned prompt, no fusion
            return prompt
        return self.fuse(torch.cat((bottleneck, prompt), 1))

    def forward_tasks(self, x: torch.Tensor, conditions: Sequence[ConditionLike]):
        """Run the encoder and FUSE once, the decoder once per condition (task); returns one output per task."""
        tasks = [self.resolve_condition(c).task for c in conditions]
        for t in tasks:
            if t is None:
                raise ValueError("UniSegNetwork needs condition.task")
            elif not 0 <= t < self.num_tasks:
                raise ValueError(f"task index {t} out of range 0..{self.num_tasks - 1}")
        skips = self.encoder(x)
        prompts = self.task_prompts(skips[-1])
        outputs = []
        for t in tasks:
            modulate = None if self.film is None else self.film.for_task(t)
            prompt = prompts[:, t:t + 1] if self.prompt_gain == 1.0 else prompts[:, t:t + 1] * self.prompt_gain
            if self.prompt_position == "bottleneck":
                conditioned = skips[:-1] + [torch.cat((skips[-1], prompt), 1)]
                outputs.append(self.decoder(conditioned, modulate=modulate))
            else:  # UniSeg-T ablation: the task prompt reaches only the segmentation heads
                outputs.append(self.decoder(skips, head_extra=prompt, modulate=modulate))
        return outputs

    def forward(self, x: torch.Tensor, condition: ConditionLike = None):
        return self.hide_invisible_classes(self.forward_tasks(x, [self.resolve_condition(condition)])[0])

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        return super().compute_conv_feature_map_size(input_size) + 3 * np.prod(self.prompt.shape[1:], dtype=np.int64)


class TaskFiLM(nn.Module):
    """Per-task, per-channel scale and shift of each decoder stage's output: x * (1 + gamma[t]) + beta[t].

    Zero-initialised, so training starts from the unconditioned decoder. It acts after the stage's normalisation
    and nonlinearity, where nothing normalises a per-task shift away again (a constant extra input channel
    before a conv + InstanceNorm is removed by the norm's mean subtraction).
    """

    def __init__(self, num_tasks: int, channels_per_stage: Sequence[int]):
        super().__init__()
        self.scale = nn.ParameterList([nn.Parameter(torch.zeros(num_tasks, c)) for c in channels_per_stage])
        self.shift = nn.ParameterList([nn.Parameter(torch.zeros(num_tasks, c)) for c in channels_per_stage])

    def for_task(self, task: int):
        def modulate(stage: int, x: torch.Tensor) -> torch.Tensor:
            view = (1, -1) + (1,) * (x.ndim - 2)
            return x * (1 + self.scale[stage][task].view(view)) + self.shift[stage][task].view(view)
        return modulate


class UniSegBackbone(_StemmedUNetParts, nn.Module):
    """UniSeg's U-Net without prompt and FUSE: the downstream (fine-tuning) network of the paper.

    Same encoder (with its multi-channel stem), decoder and parameter names as UniSegNetwork; the first transposed
    conv takes the bottleneck only. In (B, C, *patch), out logits like PlainConvUNet (list if deep supervision).
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op: Type[_ConvNd], kernel_sizes,
                 strides, n_conv_per_stage, num_classes: int, n_conv_per_stage_decoder,
                 stem_channels: Optional[Sequence[int]] = None, conv_bias: bool = True,
                 norm_op: Optional[Type[nn.Module]] = None, norm_op_kwargs: Optional[dict] = None,
                 dropout_op: Optional[Type[_DropoutNd]] = None, dropout_op_kwargs: Optional[dict] = None,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False, decoder_kernel_sizes: Optional[Sequence] = None,
                 transpconv_bias: bool = True, seg_bias: bool = True):
        super().__init__()
        self.num_classes = num_classes
        _build_stemmed_unet(self, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                            n_conv_per_stage, num_classes, n_conv_per_stage_decoder, stem_channels, conv_bias,
                            norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                            deep_supervision, decoder_kernel_sizes, transpconv_bias, seg_bias,
                            extra_bottleneck_channels=0)

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))
