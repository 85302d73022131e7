"""A prompt pool in the style of Learning-to-Prompt (Wang et al., CVPR 2022): learnable keys and values, cosine
matching of a query with the keys, top-k selection.

The pool has `num_groups` groups of `per_group` slots (echo: one group per view, three slots each). In training a
group label per sample can force that group's slots (so each group's keys learn its queries); without labels the
top-k keys by cosine similarity are selected, so prediction needs no group (view) id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PromptSelection:
    """What a pool lookup returns. prompts: (B, k * length, dim) selected values; similarity: (B, M) cosine of the
    query with every key; indices: (B, k) selected slots; matching: (B,) sum of the selected cosines (L2P's
    'reduce_sim', the quantity the matching loss maximises)."""
    prompts: torch.Tensor
    similarity: torch.Tensor
    indices: torch.Tensor
    matching: torch.Tensor

    def voted_group(self, per_group: int, num_groups: int) -> torch.Tensor:
        """(B,) group (view) each sample's selected slots vote for (ties: the group of the best slot)."""
        groups = self.indices // per_group
        votes = F.one_hot(groups, num_groups).sum(1).float()
        votes[torch.arange(len(groups)), groups[:, 0]] += 0.5  # tie break by the most similar slot
        return votes.argmax(1)


class PromptPool(nn.Module):
    """keys (M, dim), values (M, length, dim), M = num_groups * per_group; both initialised uniform(-1, 1)."""

    def __init__(self, num_groups: int, per_group: int, length: int, dim: int, top_k: int):
        super().__init__()
        if num_groups < 1 or per_group < 1 or length < 1 or dim < 1:
            raise ValueError("prompt pool sizes must be positive")
        if not 1 <= top_k <= num_groups * per_group:
            raise ValueError(f"top_k must be in 1..{num_groups * per_group}, got {top_k}")
        self.num_groups, self.per_group, self.top_k = num_groups, per_group, top_k
        self.keys = nn.Parameter(torch.empty(num_groups * per_group, dim).uniform_(-1, 1))
        self.values = nn.Parameter(torch.empty(num_groups * per_group, length, dim).uniform_(-1, 1))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def group_slots(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, top_k) slot indices of each sample's group (the first top_k slots of the group, wrapping)."""
        offsets = torch.arange(self.top_k, device=groups.device) % self.per_group
        return groups[:, None].long() * self.per_group + offsets

    def forward(self, query: torch.Tensor, groups: Optional[torch.Tensor] = None) -> PromptSelection:
        """query (B, dim); groups (B,) group ids to force (training) or None (top-k by similarity)."""
        if query.ndim != 2 or query.shape[1] != self.keys.shape[1]:
            raise ValueError(f"query must have shape (B, {self.keys.shape[1]}), got {tuple(query.shape)}")
        similarity = F.normalize(query, dim=1, eps=1e-6) @ F.normalize(self.keys, dim=1, eps=1e-6).t()
        if groups is None:
            indices = similarity.topk(self.top_k, dim=1).indices
        else:
            if groups.min() < 0 or groups.max() >= self.num_groups:
                raise ValueError(f"group ids must be in 0..{self.num_groups - 1}, got {groups.tolist()}")
            indices = self.group_slots(groups)
        prompts = self.values[indices].flatten(1, 2)
        matching = similarity.gather(1, indices).sum(1)
        return PromptSelection(prompts, similarity, indices, matching)
