"""M4oE on nnU-Net's convolutional U-Net: mixture-of-modality-experts layers and per-dataset heads.

A `MoEConvBlock` (residual, per-voxel expert MLPs with a softmax gate, networks/moe.py) follows every encoder stage
at 1/4 resolution or coarser (the bottleneck included) and every decoder stage at 1/4 resolution or coarser
(`moe_in` = "encoder" | "decoder" | "both" | "none": the paper's Table 4 ablations). Full-resolution stages stay
plain: pointwise experts there cost ~100 GFLOP per 128^3 sample.

Heads: one 1x1x1 projection per task (dataset) and deep-supervision level, `dataset_heads[level][task]`, chosen per
sample (`forward(x, tasks=...)` for mixed batches, or the condition's task). They are deliberately not under
`decoder.seg_layers`: nnU-Net's `-pretrained_weights` skips seg_layers, and M4oE's phase 2 and "add a modality"
keep the heads (shapes must match). Phase 1 (masked image modelling) adds a reconstruction head and routes each
sample to its modality's expert (`route`). Condition: `task` (head); `modality` is the routing id in phase 1.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
from torch import nn

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.blocks import touch_with_zero
from nnunetv2_universal.networks.moe import MoEConvBlock, MoEMLP
from nnunetv2_universal.networks.uniseg import _build_stemmed_unet, _StemmedUNetParts

MOE_PLACEMENTS = ("both", "encoder", "decoder", "none")


class M4oEUNet(_StemmedUNetParts, ConditionedNetwork):
    """In (B, C, *patch); out logits (B, num_classes, *patch) (list, highest resolution first, with deep
    supervision). `num_classes` is the largest task's class count; callers slice to the task's classes."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op, kernel_sizes, strides,
                 n_conv_per_stage, num_classes: int, n_conv_per_stage_decoder, num_tasks: int, num_experts: int = 2,
                 moe_in: str = "both", gate_mode: str = "paper", moe_ratio: float = 4.0,
                 moe_min_downsampling: int = 4, with_reconstruction_head: bool = False, all_gates: bool = False,
                 stem_channels=None,
                 conv_bias: bool = True, norm_op=None, norm_op_kwargs=None, dropout_op=None, dropout_op_kwargs=None,
                 nonlin=None, nonlin_kwargs=None, deep_supervision: bool = False, patch_size=None, **_ignored):
        super().__init__()
        if moe_in not in MOE_PLACEMENTS:
            raise ValueError(f"moe_in must be one of {MOE_PLACEMENTS}, got {moe_in!r}")
        self.num_tasks, self.num_classes, self.num_experts = num_tasks, num_classes, num_experts
        strides = _build_stemmed_unet(self, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes,
                                      strides, n_conv_per_stage, num_classes, n_conv_per_stage_decoder,
                                      stem_channels, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                      dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision, None, True, True,
                                      extra_bottleneck_channels=0)
        self.decoder.seg_layers = nn.ModuleList()  # replaced by dataset_heads (see module docstring)
        channels = list(self.encoder.output_channels)
        downsampling = np.cumprod(np.array([np.max(s) for s in strides]))
        deep = [bool(d >= moe_min_downsampling) for d in downsampling]
        encoder_moe = moe_in in ("both", "encoder")
        decoder_moe = moe_in in ("both", "decoder")
        self.encoder_moe = nn.ModuleList(
            MoEConvBlock(c, num_experts, moe_ratio, gate_mode, all_gates) if encoder_moe and d else nn.Identity()
            for c, d in zip(channels, deep))
        # decoder stage s works at the resolution of encoder stage n_stages - 2 - s
        self.decoder_moe = nn.ModuleList(
            MoEConvBlock(channels[-(s + 2)], num_experts, moe_ratio, gate_mode, all_gates)
            if decoder_moe and deep[-(s + 2)] else nn.Identity() for s in range(len(channels) - 1))
        self.dataset_heads = nn.ModuleList(
            nn.ModuleList(conv_op(channels[-(s + 2)], num_classes, 1, 1, 0, bias=True) for _ in range(num_tasks))
            for s in range(len(channels) - 1))
        self.reconstruction = conv_op(channels[0], max(stem_channels or [input_channels]), 1) \
            if with_reconstruction_head else None
        # phase 1: masked voxels take a learned value per input channel (a CNN has no tokens to replace)
        self.mask_token = nn.Parameter(torch.zeros(max(stem_channels or [input_channels]))) \
            if with_reconstruction_head else None

    # ---- MoE control
    @property
    def moe_layers(self) -> List[MoEMLP]:
        return [m.moe for m in self.modules() if isinstance(m, MoEConvBlock)]

    def route(self, expert_ids: Optional[torch.Tensor]) -> None:
        """Hard-route each sample to one expert (phase 1) or back to the gate (None)."""
        if expert_ids is not None and (expert_ids.min() < 0 or expert_ids.max() >= self.num_experts):
            raise ValueError(f"expert ids {expert_ids.tolist()} outside 0..{self.num_experts - 1}")
        for layer in self.moe_layers:
            layer.route(expert_ids)

    def reset_gates(self) -> None:
        for layer in self.moe_layers:
            layer.reset_gate()

    # ---- forward
    def _features(self, x: torch.Tensor):
        """Decoder features per stage (lowest resolution first)."""
        skips = []
        for stage, moe in zip(self.encoder.stages, self.encoder_moe):
            x = moe(stage(x))
            skips.append(x)
        x, features = skips[-1], []
        for s in range(len(self.decoder.stages)):
            x = self.decoder.stages[s](torch.cat((self.decoder.transpconvs[s](x), skips[-(s + 2)]), 1))
            x = self.decoder_moe[s](x)
            features.append(x)
        return features

    def _head(self, level: int, features: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        return select_heads(self.dataset_heads[level], features, tasks, self.training)

    def _tasks(self, x: torch.Tensor, condition: ConditionLike, tasks: Optional[torch.Tensor]) -> torch.Tensor:
        if tasks is None:
            task = self.resolve_condition(condition).task
            if task is None:
                raise ValueError("M4oEUNet needs condition.task (the dataset head) or per-sample tasks=")
            tasks = torch.full((x.shape[0],), int(task), device=x.device)
        tasks = tasks.to(x.device).long()
        if tasks.min() < 0 or tasks.max() >= self.num_tasks:
            raise ValueError(f"task ids {tasks.tolist()} outside 0..{self.num_tasks - 1}")
        return tasks

    def forward(self, x: torch.Tensor, condition: ConditionLike = None, tasks: Optional[torch.Tensor] = None,
                reconstruct: bool = False, mask: Optional[torch.Tensor] = None):
        """Segmentation logits; `reconstruct=True`: phase 1's reconstruction of x with `mask` (B, 1, *spatial)
        voxels hidden (through forward, so DDP syncs it)."""
        if reconstruct:
            return self.reconstruct(x, mask)
        tasks = self._tasks(x, condition, tasks)
        features = self._features(x)
        if not self.decoder.deep_supervision:
            return self.hide_invisible_classes(self._head(len(features) - 1, features[-1], tasks))
        outputs = [self._head(s, f, tasks) for s, f in enumerate(features)][::-1]
        return self.hide_invisible_classes(outputs)

    def reconstruct(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Phase 1: full-resolution reconstruction (B, C_max, *patch) of x whose masked voxels hold the mask
        token."""
        if self.reconstruction is None:
            raise RuntimeError("built without a reconstruction head (with_reconstruction_head=False)")
        if mask is not None:
            token = self.mask_token[:x.shape[1]].reshape(1, -1, *[1] * (x.ndim - 2)).to(x.dtype)
            x = x * (1 - mask) + token * mask
        elif self.training:  # unmasked: the token still gets a (zero) gradient, as DDP requires
            x = x + self.mask_token.sum() * 0.0
        out = self.reconstruction(self._features(x)[-1])
        return touch_with_zero(out, [self.dataset_heads]) if self.training else out

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        extra = np.int64(0)
        size = list(input_size)
        for stage_stride, moe in zip(self.encoder.strides, self.encoder_moe):
            size = [s // st for s, st in zip(size, np.broadcast_to(stage_stride, (len(size),)))]
            if isinstance(moe, MoEConvBlock):
                extra += np.prod(size, dtype=np.int64) * moe.moe.channels * (2 + 5 * moe.moe.num_experts)
        return super().compute_conv_feature_map_size(input_size) + 2 * extra


def select_heads(heads: nn.ModuleList, features: torch.Tensor, tasks: torch.Tensor, training: bool) -> torch.Tensor:
    """Each sample through its own dataset's head; in training the other heads are touched with weight 0 (DDP)."""
    out = None
    used = tasks.unique().tolist()
    for t in used:
        chosen = tasks == t
        logits = heads[t](features[chosen])
        if out is None:
            out = logits.new_zeros((features.shape[0], *logits.shape[1:]))
        out[chosen] = logits
    return touch_with_zero(out, [h for i, h in enumerate(heads) if i not in used]) if training else out


def expand_for_new_modality(state_dict: dict, copy_from: int, new_tasks: int = 1,
                            head_init_from: Optional[int] = None) -> dict:
    """State dict of an M4oE network (the 3D M4oEUNet or the paper's SwinUNetMoE) with one more expert in every MoE
    layer (a copy of expert `copy_from`, with the gate row copied) and `new_tasks` more dataset heads (copies of head
    `head_init_from`, or zero-initialised)."""
    out = dict(state_dict)
    experts, tails = {}, {}  # MoE layer prefix (`...moe` in 3D, `...mlp` in Swin) -> expert indices / copied tails
    for key in state_dict:
        if ".experts." in key:
            prefix, rest = key.split(".experts.", 1)
            index, tail = rest.split(".", 1)
            experts.setdefault(prefix, set()).add(int(index))
            if int(index) == copy_from:
                tails.setdefault(prefix, set()).add(tail)
    if not experts:
        raise ValueError("the state dict has no MoE experts (is it an M4oE checkpoint with moe_in != 'none'?)")
    for prefix, indices in experts.items():
        if prefix not in tails:
            raise ValueError(f"{prefix} has no expert {copy_from} (experts {sorted(indices)})")
        for tail in tails[prefix]:
            out[f"{prefix}.experts.{max(indices) + 1}.{tail}"] = state_dict[f"{prefix}.experts.{copy_from}.{tail}"]
        for part in ("weight", "bias"):
            key = f"{prefix}.gate.{part}"
            if key in state_dict and state_dict[key].shape[0] == len(indices):  # paper gate: one row per expert
                out[key] = torch.cat((state_dict[key], state_dict[key][copy_from:copy_from + 1]))
    heads = {}  # (head group, tail) -> task indices; 3D: dataset_heads.LEVEL.TASK.TAIL, Swin: dataset_heads.TASK.TAIL
    for key in state_dict:
        if key.startswith("dataset_heads."):
            parts = key.split(".")[1:]
            group = parts[0] if parts[1].isdigit() else None
            parts = parts[1:] if group is not None else parts
            heads.setdefault((group, ".".join(parts[1:])), []).append(int(parts[0]))
    for (group, tail), tasks in heads.items():
        base = "dataset_heads." + (f"{group}." if group is not None else "")
        source = state_dict[f"{base}{head_init_from if head_init_from is not None else 0}.{tail}"]
        for i in range(new_tasks):
            out[f"{base}{max(tasks) + 1 + i}.{tail}"] = source.clone() if head_init_from is not None \
                else torch.zeros_like(source)
    return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def moe_parameter_summary(network: nn.Module) -> dict:
    """Total, experts, gates and heads parameter counts (for the paper's 27.31 M comparison)."""
    moe = [m for m in network.modules() if isinstance(m, MoEMLP)]
    experts = sum(count_parameters(m.experts) for m in moe)
    gates = sum(count_parameters(g) for m in moe for g in m.gate_layers)
    single_expert = sum(count_parameters(m.experts[0]) for m in moe)
    total = count_parameters(network)
    return {"total": total, "experts": experts, "gates": gates,
            "single_expert_path": total - experts - gates + single_expert}
