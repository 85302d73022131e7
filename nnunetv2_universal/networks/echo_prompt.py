"""The prompt-driven view-agnostic echocardiography network (Kim et al., arXiv:2404.05916) on nnU-Net's 2D+t U-Net.

Per clip (B, 1, T, H, W), time first:
- query q (B, Dq): frozen SAM encoder on frame 0 (passed in from a per-case cache in training; computed by the
  attached query encoder when nnU-Net's predictor calls `network(x)`);
- prompt pool (views x 3 keys/values): top-k keys by cosine with q (no view id needed), or in training the view's
  own slots; the selected values, averaged, give the prompt code;
- class text embeddings F(c) (K, Dt): ClinicalBERT, stored as a buffer (`class_embeddings`);
- pixel-text score maps S (B, K, T', H', W'): cosine of projected decoder features and projected F(c) at a reduced
  resolution (`score_map_stage` decoder stages above the full-resolution output; the paper's auxiliary
  segmentation "at a lower resolution"), concatenated to that stage's features, which the decoder then carries on
  (`score_map_stage=0`: full resolution, concatenated to the head input);
- controller: [image code, text code of class k, prompt code] -> 153 parameters of a 3-layer 1x1x1 head per
  (sample, class); one sigmoid logit map per class (nnU-Net regions).

Ablations (paper Tables 3-4): `text_mode` "clinicalbert" | "onehot" (one-hot class codes everywhere text is used) |
"none" (no score maps; one-hot class codes for the controller only); `prompt_selection` "pool" | "view" (the view
id selects the slots also at prediction; needs `condition.view`).

Deep supervision: the dynamic heads exist at full resolution only, so the decoder has no static heads
(`decoder.seg_layers` is empty) and `decoder.deep_supervision` must stay False.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_universal.conditioning import ConditionedNetwork, ConditionLike
from nnunetv2_universal.networks.blocks import GeneratedConvHead
from nnunetv2_universal.networks.prompt_pool import PromptPool, PromptSelection
from nnunetv2_universal.networks.uniseg import _build_stemmed_unet, _StemmedUNetParts

TEXT_MODES = ("clinicalbert", "onehot", "none")
PROMPT_SELECTIONS = ("pool", "view")


class EchoPromptNetwork(_StemmedUNetParts, ConditionedNetwork):
    """In (B, 1, T, H, W); out logits (B, num_classes, T, H, W), one binary map per class (region)."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op, kernel_sizes, strides,
                 n_conv_per_stage, num_classes: int, n_conv_per_stage_decoder, conv_bias: bool = True,
                 norm_op=None, norm_op_kwargs=None, dropout_op=None, dropout_op_kwargs=None, nonlin=None,
                 nonlin_kwargs=None, deep_supervision: bool = False, num_views: int = 3, prompts_per_view: int = 3,
                 prompt_length: int = 5, top_k: int = 3, query_dim: int = 256, query_image_size: int = 224,
                 text_dim: int = 768, score_dim: int = 64, code_dim: int = 256, head_channels: int = 8,
                 text_mode: str = "clinicalbert", prompt_selection: str = "pool", train_view_masking: bool = True,
                 score_map_stage: int = 1, patch_size=None, **_ignored):
        super().__init__()
        if text_mode not in TEXT_MODES or prompt_selection not in PROMPT_SELECTIONS:
            raise ValueError(f"text_mode must be one of {TEXT_MODES} and prompt_selection one of "
                             f"{PROMPT_SELECTIONS}, got {text_mode!r}, {prompt_selection!r}")
        if deep_supervision:
            raise ValueError("EchoPromptNetwork has dynamic heads at full resolution only; deep supervision must be "
                             "off (the echo trainer disables it)")
        self.num_classes, self.num_views = num_classes, num_views
        self.text_mode, self.prompt_selection = text_mode, prompt_selection
        self.train_view_masking = train_view_masking
        self.query_image_size = query_image_size
        norm_op_kwargs, nonlin_kwargs = norm_op_kwargs or {}, nonlin_kwargs or {}
        _build_stemmed_unet(self, input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                            n_conv_per_stage, num_classes, n_conv_per_stage_decoder, [input_channels], conv_bias,
                            norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, False,
                            None, True, True, extra_bottleneck_channels=0)
        self.decoder.seg_layers = nn.ModuleList()  # the dynamic head replaces them (no unused parameters for DDP)
        full_res, bottleneck = self.encoder.output_channels[0], self.encoder.output_channels[-1]
        n_decoder = len(self.decoder.stages)
        if not 0 <= score_map_stage < n_decoder:
            raise ValueError(f"score_map_stage must be in 0..{n_decoder - 1} (decoder stages above full resolution), "
                             f"got {score_map_stage}")
        self.score_map_stage = score_map_stage
        self._score_stage_index = n_decoder - 1 - score_map_stage  # the decoder stage whose output is scored
        score_channels = self.encoder.output_channels[-(self._score_stage_index + 2)]

        # class embeddings: ClinicalBERT (filled by the trainer, saved with the weights) or one-hot codes
        if text_mode == "clinicalbert":
            self.register_buffer("class_embeddings", torch.zeros(num_classes, text_dim))
            self.register_buffer("class_embeddings_ready", torch.zeros((), dtype=torch.bool))
        else:
            self.register_buffer("class_embeddings", torch.eye(num_classes))
            self.register_buffer("class_embeddings_ready", torch.ones((), dtype=torch.bool))
        embed_dim = self.class_embeddings.shape[1]
        self.uses_score_maps = text_mode != "none"
        if self.uses_score_maps:
            self.pixel_projection = conv_op(score_channels, score_dim, 1)
            self.text_projection = nn.Linear(embed_dim, score_dim)
            if score_map_stage > 0:  # the next up-sampling also reads the K score maps
                old = self.decoder.transpconvs[self._score_stage_index + 1]
                self.decoder.transpconvs[self._score_stage_index + 1] = type(old)(
                    old.in_channels + num_classes, old.out_channels, old.kernel_size, old.stride,
                    bias=old.bias is not None)

        self.prompt_pool = PromptPool(num_views, prompts_per_view, prompt_length, query_dim, top_k)
        self.image_code = nn.Sequential(norm_op(bottleneck, **norm_op_kwargs), nonlin(**nonlin_kwargs))
        self.image_code_projection = nn.Linear(bottleneck, code_dim)
        # Linear (no ReLU): with two nearly parallel prompts a ReLU code can die for both classes at once, and
        # identical codes make identical heads (observed: LV_epi collapsed onto LV_endo).
        self.text_code = nn.Linear(embed_dim, code_dim)
        self.prompt_code = nn.Linear(query_dim, code_dim)
        head_in = full_res + (num_classes if self.uses_score_maps and score_map_stage == 0 else 0)
        self.head_input = nn.Sequential(norm_op(head_in, **norm_op_kwargs), nonlin(**nonlin_kwargs),
                                        conv_op(head_in, head_channels, 1))
        self.head = GeneratedConvHead([(head_channels, head_channels), (head_channels, head_channels),
                                       (1, head_channels)])
        self.controller = nn.Linear(3 * code_dim, self.head.num_params)

        # Not registered as submodules: the frozen SAM encoder is loaded from the user's local checkpoint on first
        # query-less forward (prediction) and never saved with the weights.
        self.query_encoder_loader: Optional[Callable[[], nn.Module]] = None
        self._query_encoder: List[nn.Module] = []
        self.view_votes: Optional[List[int]] = None  # set to [] to record the pool's view vote of each clip

    # ---- query
    def attach_query_encoder(self, encoder: nn.Module) -> None:
        self._query_encoder[:] = [encoder]

    def compute_query(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Dq) SAM queries of the clips' first frames."""
        from nnunetv2_universal.echo.query_encoder import QueryEncoderError, first_frame_query
        if not self._query_encoder:
            if self.query_encoder_loader is None:
                raise QueryEncoderError("this network has no SAM query encoder: pass `query=` or set "
                                        "nnUNet_universal_sam_checkpoint to the local SAM checkpoint")
            self._query_encoder.append(self.query_encoder_loader())
        encoder = self._query_encoder[0]
        if next(encoder.parameters()).device != x.device:
            encoder.to(x.device)
        return first_frame_query(encoder, x, self.query_image_size).to(x.dtype)

    # ---- forward
    def _views(self, views: Optional[torch.Tensor], condition: ConditionLike, batch: int,
               device) -> Optional[torch.Tensor]:
        if views is None and condition is not None:
            view = self.resolve_condition(condition).view
            views = None if view is None else torch.full((batch,), int(view), device=device)
        if views is None and self.condition is not None and self.condition.view is not None:
            views = torch.full((batch,), int(self.condition.view), device=device)
        if self.prompt_selection == "view":
            if views is None:
                raise ValueError("prompt_selection='view' (ablation) needs the view: pass views= or "
                                 "condition.view")
            return views
        return views if (self.training and self.train_view_masking) else None

    def _decode(self, skips: Sequence[torch.Tensor],
                class_embeddings: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Full-resolution decoder features and the score maps (None without text); below full resolution the
        score maps join the scored stage's features on their way up."""
        x, scores = skips[-1], None
        last = len(self.decoder.stages) - 1
        for s in range(last + 1):
            x = self.decoder.stages[s](torch.cat((self.decoder.transpconvs[s](x), skips[-(s + 2)]), 1))
            if self.uses_score_maps and s == self._score_stage_index:
                scores = self.score_maps(x, class_embeddings)
                if s < last:
                    x = torch.cat((x, scores.to(x.dtype)), 1)
        return x, scores

    def text_embeddings(self) -> torch.Tensor:
        """(K, D) class embeddings (the trainer stores each prompt's embedding minus the bare template's), each
        scaled to unit length so the learned projections start at O(1). No centring over the classes: with two
        classes that would leave +-u, the same as a centred one-hot code (docs/explanation/echo-model.md)."""
        return F.normalize(self.class_embeddings, dim=1, eps=1e-12)

    def score_maps(self, features: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, K, *spatial) cosine between each voxel's projected feature and each class's projected embedding."""
        # = einsum(normalize(P f), t) with P the pixel projection, computed as (t^T P) f / ||P f||: the projected
        # features are only reduced to their norm, never normalised channel by channel or permuted (at 16x224x224
        # those full-resolution passes cost more than the projection itself, see docs/performance.md)
        text = F.normalize(self.text_projection(class_embeddings), dim=1, eps=1e-6)  # (K, S)
        projection = self.pixel_projection
        norms = torch.linalg.vector_norm(projection(features), dim=1, keepdim=True).clamp_min(1e-6)
        weight = (text.to(projection.weight.dtype) @ projection.weight.flatten(1)).reshape(
            text.shape[0], -1, *projection.weight.shape[2:])
        conv = F.conv3d if features.ndim == 5 else F.conv2d
        return conv(features, weight, text.to(projection.bias.dtype) @ projection.bias) / norms

    def forward_with_aux(self, x: torch.Tensor, query: Optional[torch.Tensor] = None,
                         views: Optional[torch.Tensor] = None,
                         condition: ConditionLike = None,
                         force_views: bool = False) -> Tuple[torch.Tensor, Dict[str, object]]:
        """Logits and what the losses and logs need: score maps (or None) and the PromptSelection.
        `force_views`: select the given views' prompt slots also in eval mode (the condition diagnostic)."""
        if self.text_mode == "clinicalbert" and not bool(self.class_embeddings_ready):
            raise RuntimeError("class_embeddings are not set: the trainer computes them from ClinicalBERT "
                               "(nnUNet_universal_clinicalbert) before training; a trained checkpoint holds them")
        b = x.shape[0]
        views = views if force_views else self._views(views, condition, b, x.device)
        if query is None:
            query = self.compute_query(x)
        selection: PromptSelection = self.prompt_pool(query, views)
        if self.view_votes is not None:
            self.view_votes.extend(selection.voted_group(self.prompt_pool.per_group, self.num_views).tolist())

        skips = self.encoder(x)
        class_embeddings = self.text_embeddings()
        features, scores = self._decode(skips, class_embeddings)
        at_full_resolution = scores is not None and self.score_map_stage == 0
        head_features = self.head_input(torch.cat((features, scores), 1) if at_full_resolution else features)

        spatial_dims = tuple(range(2, skips[-1].ndim))
        image_code = self.image_code_projection(self.image_code(skips[-1]).mean(spatial_dims))  # (B, code)
        text_code = self.text_code(class_embeddings)  # (K, code)
        prompt_code = self.prompt_code(selection.prompts.mean(1))  # (B, code)
        k = self.num_classes
        codes = torch.cat((image_code[:, None].expand(-1, k, -1), text_code[None].expand(b, -1, -1),
                           prompt_code[:, None].expand(-1, k, -1)), 2)
        params = self.controller(codes).reshape(b * k, -1)  # sample-major: instance b * k + class
        logits = self.head.apply(head_features, params, instances_per_input=k).reshape(b, k, *x.shape[2:])
        return logits, {"scores": scores, "selection": selection, "query": query}

    def forward(self, x: torch.Tensor, condition: ConditionLike = None, query: Optional[torch.Tensor] = None,
                views: Optional[torch.Tensor] = None, with_aux: bool = False):
        """nnU-Net calls network(x); trainers pass the cached query and views (with_aux for DDP)."""
        logits, aux = self.forward_with_aux(x, query, views, condition)
        return (logits, aux) if with_aux else logits

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        size = np.prod(input_size, dtype=np.int64)
        extra = size * (self.head_input[-1].out_channels * (1 + self.num_classes) + 2 * self.num_classes)
        if self.uses_score_maps:
            extra += size * self.pixel_projection.out_channels
        return super().compute_conv_feature_map_size(input_size) + extra
