"""Mixture of modality experts (M4oE, Jiang et al., MICCAI 2024): E expert MLPs mixed by a gate, per token.

`MoEMLP` replaces a transformer block's MLP (tokens last: (..., C)); `MoEConvBlock` is the same layer as a
residual block for nnU-Net's convolutional U-Net (channels first: (B, C, *spatial), one token per voxel).

Experts: Linear C -> ratio*C, GELU, Linear -> C. Gate modes:
- "paper" (default): g(x) = softmax(W_g x) over the E experts, per token; y = sum_e g_e(x) E_e(x) (the paper's
  equations);
- "code_compat": the released code's form, w(x) = softmax over channels of Linear C -> C, shared by all experts:
  y = w(x) * sum_e E_e(x);
- "none": equal weights 1/E (the "without gate" ablation; also phase 2's starting point, see `reset_gate`).
Hard routing (phase 1: each image trains only its modality's expert) is set per batch with `route(expert_ids)`:
y_b = E_{id_b}(x_b); the other experts and the gate get no gradient.

The two gates have their own names (`gate`: E outputs, `channel_gate`: C outputs). Phase 1 does not use a gate
and builds both (`all_gates=True`), so its checkpoint loads into phase 2 of every gate mode through nnU-Net's
`-pretrained_weights` (phase 2 starts its gate at zero anyway).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_universal.networks.blocks import touch_with_zero

GATE_MODES = ("paper", "code_compat", "none")


class MoEMLP(nn.Module):
    """Tokens-last mixture of expert MLPs: in/out (..., C)."""

    def __init__(self, channels: int, num_experts: int, ratio: float = 4.0, gate_mode: str = "paper",
                 dropout: float = 0.0, all_gates: bool = False):
        super().__init__()
        if gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
        if num_experts < 1:
            raise ValueError("num_experts must be >= 1")
        hidden = int(channels * ratio)
        self.channels, self.num_experts, self.gate_mode = channels, num_experts, gate_mode
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout),
                                                   nn.Linear(hidden, channels), nn.Dropout(dropout))
                                     for _ in range(num_experts))
        self.gate = nn.Linear(channels, num_experts) if gate_mode == "paper" or all_gates else None
        self.channel_gate = nn.Linear(channels, channels) if gate_mode == "code_compat" or all_gates else None
        self.expert_ids: Optional[torch.Tensor] = None  # hard routing (phase 1), set by `route`

    def route(self, expert_ids: Optional[torch.Tensor]) -> None:
        """Per-sample expert ids (B,) for hard routing, or None for the gate."""
        self.expert_ids = expert_ids

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) in "paper" mode, (..., C) channel weights in "code_compat" mode, (..., E) = 1/E in "none"."""
        if self.gate_mode == "none":
            return x.new_full((*x.shape[:-1], self.num_experts), 1.0 / self.num_experts)
        return F.softmax((self.gate if self.gate_mode == "paper" else self.channel_gate)(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expert_ids is not None:
            ids = self.expert_ids.to(x.device).long()
            if ids.shape[0] != x.shape[0] or ids.min() < 0 or ids.max() >= self.num_experts:
                raise ValueError(f"routing ids {ids.tolist()} do not fit a batch of {x.shape[0]} and "
                                 f"{self.num_experts} experts")
            out = torch.zeros_like(x)
            used = ids.unique().tolist()
            for e in used:
                chosen = ids == e
                out[chosen] = self.experts[e](x[chosen]).to(out.dtype)
            unused = [m for i, m in enumerate(self.experts) if i not in used] + self.gate_layers
            return touch_with_zero(out, unused) if self.training else out
        outputs = torch.stack([expert(x) for expert in self.experts], dim=-1)  # (..., C, E)
        weights = self.gate_weights(x)
        if self.gate_mode == "code_compat":
            return weights * outputs.sum(-1)
        return (outputs * weights.unsqueeze(-2)).sum(-1)

    @property
    def gate_layers(self) -> list:
        return [g for g in (self.gate, self.channel_gate) if g is not None]

    @torch.no_grad()
    def reset_gate(self) -> None:
        """Zero the gates: every expert weighted 1/E (paper mode; code_compat: every channel 1/C) at the start of
        gated fine-tuning."""
        for gate in self.gate_layers:
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)

    @torch.no_grad()
    def add_expert(self, copy_from: int) -> int:
        """Append an expert initialised from expert `copy_from` (a new modality); returns its index."""
        self.experts.append(copy.deepcopy(self.experts[copy_from]))
        if self.gate is not None:
            old = self.gate
            gate = nn.Linear(self.channels, self.num_experts + 1).to(old.weight.device)
            gate.weight[:-1] = old.weight
            gate.bias[:-1] = old.bias
            gate.weight[-1] = old.weight[copy_from]
            gate.bias[-1] = old.bias[copy_from]
            self.gate = gate
        self.num_experts += 1
        return self.num_experts - 1


class MoEConvBlock(nn.Module):
    """Residual M4oE layer for CNN feature maps: x + MoE(LayerNorm(x)) per voxel; in/out (B, C, *spatial)."""

    def __init__(self, channels: int, num_experts: int, ratio: float = 4.0, gate_mode: str = "paper",
                 all_gates: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.moe = MoEMLP(channels, num_experts, ratio, gate_mode, all_gates=all_gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.movedim(1, -1)
        return x + self.moe(self.norm(tokens)).movedim(-1, 1)
