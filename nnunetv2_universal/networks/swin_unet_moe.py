"""M4oE's own network: a 2D Swin-UNet (Cao et al.) whose transformer MLPs are M4oE layers, with per-dataset heads.

Swin-T layout (the paper's config): 224x224 input, patch 4 (56x56 tokens), embed 96, depths [2, 2, 2, 2], heads
[3, 6, 12, 24], window 7, MLP ratio 4, stochastic depth 0.2. Encoder: window / shifted-window blocks (timm's
`SwinTransformerBlock`) and patch merging; decoder: patch expanding, skip concatenation + linear, blocks; final
x4 patch expanding; a 1x1 head per dataset (no bias, as M4oE). `moe_in` ("both" | "encoder" | "decoder" | "none")
selects which blocks get M4oE MLPs. For nnU-Net's `2d` configuration (tokens need H, W divisible by 32 * patch / 4).

Forward and conditioning as M4oEUNet (condition.task = head, `tasks=` for mixed batches, `route` for phase 1);
no deep supervision (Swin-UNet has none).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torch import nn

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.blocks import MultiChannelStem, touch_with_zero
from nnunetv2_universal.networks.m4oe import select_heads
from nnunetv2_universal.networks.moe import MoEMLP


class PatchExpand(nn.Module):
    """(B, H, W, C) -> (B, s*H, s*W, C_out): Linear to s^2 * C_out channels, pixel shuffle, LayerNorm."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).reshape(b, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, self.out_dim))


def _stage(dim: int, resolution: int, depth: int, heads: int, window: int, drop_path: Sequence[float],
           moe: bool, num_experts: int, gate_mode: str, all_gates: bool = False) -> nn.Sequential:
    blocks = []
    for i in range(depth):
        block = SwinTransformerBlock(dim, (resolution, resolution), num_heads=heads, window_size=window,
                                     shift_size=0 if i % 2 == 0 else window // 2, mlp_ratio=4.0, qkv_bias=True,
                                     drop_path=drop_path[i])
        if moe:
            block.mlp = MoEMLP(dim, num_experts, 4.0, gate_mode, all_gates=all_gates)
        blocks.append(block)
    return nn.Sequential(*blocks)


class SwinUNetMoE(ConditionedNetwork):
    """In (B, C, H, W), C a stem channel count; out logits (B, num_classes, H, W) from each sample's dataset head."""

    def __init__(self, input_channels: int, num_classes: int, num_tasks: int, patch_size: Sequence[int] = (224, 224),
                 num_experts: int = 2, moe_in: str = "both", gate_mode: str = "paper", embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 token_patch: int = 4, drop_path_rate: float = 0.2, stem_channels: Optional[Sequence[int]] = None,
                 deep_supervision: bool = False, with_reconstruction_head: bool = False, all_gates: bool = False,
                 **_ignored):
        super().__init__()
        if moe_in not in ("both", "encoder", "decoder", "none"):
            raise ValueError(f"moe_in must be both|encoder|decoder|none, got {moe_in!r}")
        if deep_supervision:
            raise ValueError("SwinUNetMoE has no deep supervision; the M4oE Swin trainer disables it")
        n = len(depths)
        grid = [p // token_patch for p in patch_size]
        if len(patch_size) != 2 or grid[0] != grid[1] or any(p % (token_patch * 2 ** (n - 1)) for p in patch_size):
            raise ValueError(f"patch {list(patch_size)} must be square and divisible by {token_patch * 2 ** (n - 1)}")
        self.num_tasks, self.num_classes, self.num_experts = num_tasks, num_classes, num_experts
        self.stem = MultiChannelStem(nn.Conv2d, stem_channels or [input_channels], embed_dim, token_patch,
                                     token_patch, True, padding=0)
        self.stem_norm = nn.LayerNorm(embed_dim)
        rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()
        dims = [embed_dim * 2 ** i for i in range(n)]
        res = [grid[0] // 2 ** i for i in range(n)]
        moe_enc, moe_dec = moe_in in ("both", "encoder"), moe_in in ("both", "decoder")
        self.encoder_stages = nn.ModuleList(
            _stage(dims[i], res[i], depths[i], num_heads[i], window_size, rates[sum(depths[:i]):sum(depths[:i + 1])],
                   moe_enc, num_experts, gate_mode, all_gates) for i in range(n))
        self.merges = nn.ModuleList(PatchMerging(dims[i], dims[i + 1]) for i in range(n - 1))
        self.bottleneck_norm = nn.LayerNorm(dims[-1])
        # decoder level j works at encoder resolution n - 1 - j (j = 1..n-1)
        self.expands = nn.ModuleList(PatchExpand(dims[n - j], dims[n - 1 - j]) for j in range(1, n))
        self.skip_fuse = nn.ModuleList(nn.Linear(2 * dims[n - 1 - j], dims[n - 1 - j]) for j in range(1, n))
        self.decoder_stages = nn.ModuleList(
            _stage(dims[n - 1 - j], res[n - 1 - j], depths[n - 1 - j], num_heads[n - 1 - j], window_size,
                   rates[sum(depths[:n - 1 - j]):sum(depths[:n - j])], moe_dec, num_experts, gate_mode, all_gates)
            for j in range(1, n))
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(embed_dim, embed_dim, scale=token_patch)
        self.dataset_heads = nn.ModuleList(nn.Conv2d(embed_dim, num_classes, 1, bias=False) for _ in range(num_tasks))
        self.reconstruction = nn.Conv2d(embed_dim, max(stem_channels or [input_channels]), 1) \
            if with_reconstruction_head else None
        # phase 1 (Swin-MAE): tokens of masked patches are replaced by a learned mask token
        self.mask_token = nn.Parameter(torch.zeros(embed_dim)) if with_reconstruction_head else None
        self.token_patch = token_patch
        self.decoder = _DecoderFlags()  # nnU-Net toggles decoder.deep_supervision
        self.apply(self._init)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def initialize(module: nn.Module) -> None:  # nnU-Net calls network.apply(network.initialize)
        pass

    @property
    def moe_layers(self) -> List[MoEMLP]:
        return [m for m in self.modules() if isinstance(m, MoEMLP)]

    def route(self, expert_ids: Optional[torch.Tensor]) -> None:
        for layer in self.moe_layers:
            layer.route(expert_ids)

    def reset_gates(self) -> None:
        for layer in self.moe_layers:
            layer.reset_gate()

    def features(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, embed_dim, H, W) decoder output; `mask` (B, 1, H, W): tokens of masked patches become the mask
        token."""
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1))  # (B, h, w, C)
        if mask is not None:
            hidden = F.max_pool2d(mask.float(), self.token_patch).permute(0, 2, 3, 1) > 0.5  # (B, h, w, 1)
            x = torch.where(hidden, self.mask_token.to(x.dtype), x)
        elif self.mask_token is not None and self.training:  # a (zero) gradient for DDP
            x = x + self.mask_token.sum() * 0.0
        skips = []
        for i, stage in enumerate(self.encoder_stages):
            x = stage(x)
            if i < len(self.merges):
                skips.append(x)
                x = self.merges[i](x)
        x = self.bottleneck_norm(x)
        for j, (expand, fuse, stage) in enumerate(zip(self.expands, self.skip_fuse, self.decoder_stages)):
            x = stage(fuse(torch.cat((expand(x), skips[-(j + 1)]), -1)))
        return self.final_expand(self.decoder_norm(x)).permute(0, 3, 1, 2)

    def reconstruct(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Phase 1 (masked image modelling): (B, C_max, H, W)."""
        if self.reconstruction is None:
            raise RuntimeError("built without a reconstruction head (with_reconstruction_head=False)")
        out = self.reconstruction(self.features(x, mask))
        return touch_with_zero(out, [self.dataset_heads]) if self.training else out

    def forward(self, x: torch.Tensor, condition: ConditionLike = None, tasks: Optional[torch.Tensor] = None,
                reconstruct: bool = False, mask: Optional[torch.Tensor] = None):
        if reconstruct:
            return self.reconstruct(x, mask)
        if tasks is None:
            task = self.resolve_condition(condition).task
            if task is None:
                raise ValueError("SwinUNetMoE needs condition.task (the dataset head) or per-sample tasks=")
            tasks = torch.full((x.shape[0],), int(task), device=x.device)
        return self.hide_invisible_classes(select_heads(self.dataset_heads, self.features(x), tasks, self.training))


class _DecoderFlags(nn.Module):
    """Holds `deep_supervision` (always False) where nnU-Net looks for it."""

    def __init__(self):
        super().__init__()
        self.deep_supervision = False
