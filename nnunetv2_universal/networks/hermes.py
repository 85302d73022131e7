"""Hermes (Gao et al., CVPR 2024): context-prior learning on the reference's pre-activation residual U-Net
(`backbone="preact"`, the `hermes` plans template) or on nnU-Net's residual-encoder U-Net (`backbone="resenc"`).

Learnable prior tokens are fused with image features at several encoder and decoder stages:
- task priors: one token per global task (a structure of the registry: a (task, label) pair, or labels of several
  tasks that share a structure key) plus a null token (last row);
- modality priors: `modality_tokens` tokens per modality plus an "unknown" set (last), e.g. MR of unknown sequence.
Each fusion point owns its tables and runs `PriorAttentionBlock`s: priors attend to all voxels (then an MLP), voxels
attend to the priors (then an MLP). The updated task tokens of all points are concatenated into one posterior per
requested task, mapped by an MLP to a 1x1x1 kernel; its dot product with decoder features gives one sigmoid map per
requested task (deep-supervision levels map the kernel to their width with one linear layer each). The updated
modality tokens feed a modality classifier (auxiliary loss).

forward(x, task_ids (B, T) with -1 = null, modality_ids (B,) with -1 = unknown) -> logits (B, T, *spatial)
(list, highest resolution first, with deep supervision). Null tokens take part in prior-to-voxel attention but are
masked as keys for the voxels unless `mask_null_tokens=False` (the reference's behaviour). With a Condition
(nnU-Net's predictor) the tasks are `condition.tasks` (or a registry task's structures) plus one visible null token
as in training, a zero background channel is prepended, so nnU-Net's argmax export gives "label = argmax + 1 where
the largest sigmoid > 0.5", and channels beyond the task's are padded far below it (stock nnU-Net allocates the
collection's channel count).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from torch import nn

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.blocks import ConditionedUNetDecoder, MultiChannelStem
from nnunetv2_universal.networks.preact_unet import PreActivationDecoder, PreActivationEncoder


class CrossAttention(nn.Module):
    """Multi-head attention of `queries` (B, Nq, C) over `context` (B, Nk, C); key_mask (B, Nk) True = visible."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor,
                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, nq, c = queries.shape
        h = self.heads
        q = self.q(queries).reshape(b, nq, h, c // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, nq, c))


class PriorAttentionBlock(nn.Module):
    """Two-way attention between prior tokens (B, P, C) and voxel tokens (B, N, C), each followed by an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm_prior_q, self.norm_voxel_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.prior_from_voxels = CrossAttention(dim, heads)
        self.norm_prior_mlp = nn.LayerNorm(dim, eps=1e-4)
        self.prior_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm_voxel_q, self.norm_prior_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.voxels_from_prior = CrossAttention(dim, heads)
        self.norm_voxel_mlp = nn.LayerNorm(dim, eps=1e-4)
        self.voxel_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, priors, voxels, prior_mask=None):
        priors = priors + self.prior_from_voxels(self.norm_prior_q(priors), self.norm_voxel_kv(voxels))
        priors = priors + self.prior_mlp(self.norm_prior_mlp(priors))
        voxels = voxels + self.voxels_from_prior(self.norm_voxel_q(voxels), self.norm_prior_kv(priors), prior_mask)
        voxels = voxels + self.voxel_mlp(self.norm_voxel_mlp(voxels))
        return priors, voxels


class PriorFusion(nn.Module):
    """Prior tables of one fusion point + attention blocks; (B, C, *spatial) -> same, plus posteriors."""

    def __init__(self, dim: int, num_tasks: int, num_modalities: int, modality_tokens: int, depth: int,
                 mask_null_tokens: bool = True):
        super().__init__()
        self.num_tasks, self.num_modalities = num_tasks, num_modalities
        self.task_table = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_tasks + 1, dim)))
        self.modality_table = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(num_modalities + 1, modality_tokens, dim)))
        self.blocks = nn.ModuleList(PriorAttentionBlock(dim, max(1, dim // 32)) for _ in range(depth))
        self.mask_null_tokens = mask_null_tokens

    def select(self, task_ids: torch.Tensor, modality_ids: torch.Tensor):
        """(B, T + L, C) priors and (B, T + L) visibility: -1 selects the null task / unknown modality row."""
        tasks = torch.where(task_ids < 0, self.num_tasks, task_ids)
        modalities = torch.where(modality_ids < 0, self.num_modalities, modality_ids)
        priors = torch.cat((self.task_table[tasks], self.modality_table[modalities]), 1)
        visible = torch.cat((task_ids >= 0, torch.ones(priors.shape[0], priors.shape[1] - task_ids.shape[1],
                                                       dtype=torch.bool, device=priors.device)), 1)
        return priors, visible

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor, modality_ids: torch.Tensor):
        priors, visible = self.select(task_ids, modality_ids)
        if self.mask_null_tokens:
            # keep one null token visible per sample so a sample without tasks still has keys to attend to
            first_null = (~visible[:, :task_ids.shape[1]]).float().argmax(1)
            visible = visible.clone()
            visible[torch.arange(len(visible)), first_null] = True
        else:
            visible = None
        b, c = x.shape[:2]
        voxels = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            priors, voxels = block(priors, voxels, visible)
        return voxels.transpose(1, 2).reshape(x.shape), priors


class HierarchicalPriorHead(nn.Module):
    """Posteriors (B, T, sum C) -> kernels (B, T, out) -> logits <feature, kernel> (B, T, *spatial)."""

    def __init__(self, posterior_dim: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(posterior_dim)
        self.mlp = nn.Sequential(nn.Linear(posterior_dim, posterior_dim), nn.GELU(),
                                 nn.Linear(posterior_dim, out_channels), nn.Linear(out_channels, out_channels),
                                 nn.GELU(), nn.Linear(out_channels, out_channels))

    def kernels(self, posteriors: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(posteriors))

    @staticmethod
    def segment(kernels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bc...,btc->bt...", features, kernels)

    def forward(self, posteriors: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.segment(self.kernels(posteriors), features)


class HermesNetwork(ConditionedNetwork):
    """Hermes-R (see module docstring)."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op, kernel_sizes, strides,
                 n_blocks_per_stage, num_classes: int, n_conv_per_stage_decoder, num_global_tasks: int,
                 task_label_counts: Sequence[int] = (), task_modality_ids: Sequence[int] = (),
                 task_global_ids: Optional[Sequence[Sequence[int]]] = None,
                 stem_channels: Optional[Sequence[int]] = None,
                 num_modalities: int = 5, modality_tokens: int = 10, fusion_depth: int = 2,
                 bottleneck_fusion_depth: int = 4, fusion_min_downsampling: int = 4, mask_null_tokens: bool = True,
                 backbone: str = "resenc",
                 conv_bias: bool = False, norm_op=None, norm_op_kwargs=None, dropout_op=None, dropout_op_kwargs=None,
                 nonlin=None, nonlin_kwargs=None, deep_supervision: bool = False, **_ignored):
        super().__init__()
        self.num_global_tasks, self.num_modalities = num_global_tasks, num_modalities
        if backbone == "preact":  # the reference's pre-activation residual U-Net
            self.encoder = PreActivationEncoder(input_channels, features_per_stage, conv_op, kernel_sizes, strides,
                                                n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs, nonlin,
                                                nonlin_kwargs, stem_channels or [input_channels])
            self.decoder = PreActivationDecoder(self.encoder, n_conv_per_stage_decoder, deep_supervision, conv_bias,
                                                norm_op, norm_op_kwargs, nonlin, nonlin_kwargs)
        elif backbone == "resenc":  # nnU-Net's residual encoder and U-Net decoder
            self.encoder = ResidualEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes,
                                           strides, n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs,
                                           dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, return_skips=True)
            first = self.encoder.stem.convs[0]  # one stem conv per channel count, as UniSeg
            first.conv = MultiChannelStem(conv_op, stem_channels or [input_channels], first.conv.out_channels,
                                          first.conv.kernel_size, first.conv.stride, conv_bias)
            first.all_modules[0] = first.conv
            self.decoder = ConditionedUNetDecoder(self.encoder, 1, n_conv_per_stage_decoder, deep_supervision)
            self.decoder.seg_layers = nn.ModuleList()  # hierarchical prior heads instead
        else:
            raise ValueError(f"backbone must be 'resenc' (nnU-Net) or 'preact' (the reference), got {backbone!r}")
        # registry task i, label l -> global task id task_global_ids[i][l - 1] (for Condition(task=i)); labels that
        # are one structure share an id. Without the table: consecutive ids per task in registry order.
        if task_global_ids is None:
            offsets = np.cumsum([0] + [int(c) for c in task_label_counts][:-1])
            task_global_ids = [list(range(o, o + int(c))) for o, c in zip(offsets, task_label_counts)]
        self.task_global_ids = [[int(i) for i in ids] for ids in task_global_ids]
        self.task_label_counts = [len(ids) for ids in self.task_global_ids]
        self.task_modality_ids = [int(m) for m in task_modality_ids]
        self.num_output_channels = int(num_classes)
        channels = list(self.encoder.output_channels)
        steps = [maybe_convert_scalar_to_list(conv_op, s) for s in self.encoder.strides]
        downsampling = np.cumprod([max(s) for s in steps])
        deep = [bool(d >= fusion_min_downsampling) for d in downsampling]

        def fusion(c, depth):
            return PriorFusion(c, num_global_tasks, num_modalities, modality_tokens, depth, mask_null_tokens)

        self.encoder_fusion = nn.ModuleList(
            fusion(c, bottleneck_fusion_depth if i == n_stages - 1 else fusion_depth) if deep[i] else None
            for i, c in enumerate(channels))
        self.decoder_fusion = nn.ModuleList(
            fusion(channels[-(s + 2)], fusion_depth) if deep[-(s + 2)] else None for s in range(n_stages - 1))
        posterior_dim = sum(f.task_table.shape[1] for f in list(self.encoder_fusion) + list(self.decoder_fusion)
                            if f is not None)
        if posterior_dim == 0:
            raise ValueError("no fusion point: lower fusion_min_downsampling or use more stages")
        # one kernel MLP (the reference's head, kernels as wide as the last decoder stage); the deep-supervision
        # levels map its kernels to their width
        self.head = HierarchicalPriorHead(posterior_dim, channels[0])
        self.level_kernels = nn.ModuleList(nn.Linear(channels[0], channels[-(s + 2)]) for s in range(n_stages - 2))
        self.modality_norm = nn.LayerNorm(posterior_dim)
        # one output per modality slot, the unknown slot included (the reference's 6 for 5 modalities); the loss
        # ignores unknown modalities, so the last output is never a target
        self.modality_classifier = nn.Sequential(nn.Linear(posterior_dim, posterior_dim), nn.GELU(),
                                                 nn.Linear(posterior_dim, num_modalities + 1))
        self.last_modality_logits: Optional[torch.Tensor] = None

    @staticmethod
    def initialize(module: nn.Module) -> None:
        from dynamic_network_architectures.initialization.weight_init import InitWeights_He
        InitWeights_He(1e-2)(module)

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    def forward_ids(self, x: torch.Tensor, task_ids: torch.Tensor, modality_ids: torch.Tensor):
        """Logits (B, T, ...) (list with deep supervision) and modality logits (B, num_modalities + 1)."""
        if task_ids.ndim != 2 or task_ids.shape[0] != x.shape[0]:
            raise ValueError(f"task_ids must be (B, T) for B = {x.shape[0]}, got {tuple(task_ids.shape)}")
        if task_ids.max() >= self.num_global_tasks or modality_ids.max() >= self.num_modalities:
            raise ValueError(f"task ids must be < {self.num_global_tasks} and modality ids < {self.num_modalities}")
        task_ids, modality_ids = task_ids.to(x.device).long(), modality_ids.to(x.device).long()
        posteriors: List[torch.Tensor] = []
        t = task_ids.shape[1]
        skips = []
        h = self.encoder.stem(x) if self.encoder.stem is not None else x
        for stage, fusion in zip(self.encoder.stages, self.encoder_fusion):
            h = stage(h)
            if fusion is not None:
                h, p = fusion(h, task_ids, modality_ids)
                posteriors.append(p)
            skips.append(h)
        h, features = skips[-1], []
        for s in range(len(self.decoder.stages)):
            if hasattr(self.decoder, "step"):
                h = self.decoder.step(s, h, skips[-(s + 2)])
            else:
                h = self.decoder.stages[s](torch.cat((self.decoder.transpconvs[s](h), skips[-(s + 2)]), 1))
            if self.decoder_fusion[s] is not None:
                h, p = self.decoder_fusion[s](h, task_ids, modality_ids)
                posteriors.append(p)
            features.append(h)
        posterior = torch.cat(posteriors, 2)
        task_posterior = posterior[:, :t]
        modality_logits = self.modality_classifier(self.modality_norm(posterior[:, t:]).mean(1))
        kernels = self.head.kernels(task_posterior)
        logits = self.head.segment(kernels, features[-1])
        if self.decoder.deep_supervision:
            logits = [logits] + [self.head.segment(self.level_kernels[s](kernels), features[s])
                                 for s in range(len(features) - 2, -1, -1)]
        return logits, modality_logits

    def forward(self, x: torch.Tensor, condition: ConditionLike = None, task_ids: Optional[torch.Tensor] = None,
                modality_ids: Optional[torch.Tensor] = None):
        if task_ids is not None:
            if modality_ids is None:
                modality_ids = torch.full((x.shape[0],), -1, device=x.device)
            logits, self.last_modality_logits = self.forward_ids(x, task_ids, modality_ids)
            return logits
        # nnU-Net's predictor: tasks and modality from the condition; zero background channel for the argmax export
        cond = self.resolve_condition(condition)
        tasks, modality = cond.tasks, (-1 if not cond.modality else int(cond.modality[0]))
        subset = None
        if not tasks and cond.task is not None and cond.task < len(self.task_global_ids):
            # a registry task: all of its labels (or the requested ones), with its modality
            count = self.task_label_counts[cond.task]
            subset = sorted(set(cond.labels)) if cond.labels else list(range(1, count + 1))
            tasks = tuple(self.task_global_ids[cond.task][label - 1] for label in subset)
            # the registry's modality indices are not Hermes' vocabulary: use the task's own modality id
            modality = self.task_modality_ids[cond.task] if cond.task < len(self.task_modality_ids) else -1
        if not tasks:
            raise ValueError("HermesNetwork needs condition.tasks (global task ids), condition.task or task_ids=")
        # one visible null token, as in training (the reference tests with the C tasks plus one null)
        ids = torch.tensor([list(tasks) + [-1]] * x.shape[0], device=x.device)
        logits, self.last_modality_logits = self.forward_ids(x, ids, torch.full((x.shape[0],), modality,
                                                                                 device=x.device))
        logits = [z[:, :-1] for z in (logits if isinstance(logits, list) else [logits])]
        if subset is not None and len(subset) < self.task_label_counts[cond.task]:
            # only the requested labels were computed: the others become channels that never win the argmax
            logits = [_scatter_labels(z, subset, self.task_label_counts[cond.task]) for z in logits]
        logits = [self._padded(_with_background(z)) for z in logits]
        return logits if self.decoder.deep_supervision else logits[0]

    def _padded(self, logits: torch.Tensor) -> torch.Tensor:
        """Stock nnU-Net allocates the collection's channel count: pad, and hide what the task does not have."""
        if logits.shape[1] >= self.num_output_channels:
            return logits
        pad = logits.new_full((logits.shape[0], self.num_output_channels - logits.shape[1], *logits.shape[2:]),
                              -30.0)
        return torch.cat((logits, pad), 1)  # below the zero background channel: never the argmax


def _scatter_labels(logits: torch.Tensor, labels: Sequence[int], count: int) -> torch.Tensor:
    """(B, len(labels), ...) -> (B, count, ...): requested label l in channel l - 1, the rest far below zero."""
    out = logits.new_full((logits.shape[0], count, *logits.shape[2:]), -30.0)
    out[:, [label - 1 for label in labels]] = logits
    return out


def _with_background(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat((torch.zeros_like(logits[:, :1]), logits), 1)
