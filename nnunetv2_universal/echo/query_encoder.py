"""The frozen SAM image encoder that turns the first frame of a clip into the prompt pool's query.

`load_sam_query_encoder(path, image_size)` builds segment_anything's `ImageEncoderViT` from a local checkpoint (a
full SAM checkpoint such as sam_vit_b_01ec64.pth or an encoder-only state dict). The architecture is read off the
tensor shapes (so ViT-B/L/H and tiny test encoders all load through the same code), the absolute position
embedding and the global-attention relative-position tables are resized for `image_size` (224 in the paper instead
of SAM's 1024), and the result is loaded strictly, frozen and put in eval mode. Nothing is downloaded.

The query of a clip is the spatial mean of the encoder's neck output on frame 0 (rescaled to 0..255, grey to RGB,
SAM's pixel normalisation): `first_frame_query`. It depends on frame 0 only, so trainers cache it per case
(`QueryCache`) and training steps never run SAM.
"""
from __future__ import annotations

import hashlib
import os
import re
from functools import partial
from typing import Dict, Iterable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

SAM_CHECKPOINT_ENV = "nnUNet_universal_sam_checkpoint"
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class QueryEncoderError(RuntimeError):
    """The SAM checkpoint is missing, unreadable or not an image encoder."""


def _encoder_state_dict(state: Mapping[str, torch.Tensor], path: str) -> Dict[str, torch.Tensor]:
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    prefixed = {k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
    encoder = prefixed or dict(state)
    if "patch_embed.proj.weight" not in encoder or "pos_embed" not in encoder:
        raise QueryEncoderError(f"{path} is not a SAM checkpoint: no image_encoder.patch_embed / pos_embed tensors")
    return encoder


def sam_encoder_config(state: Mapping[str, torch.Tensor]) -> dict:
    """ImageEncoderViT keyword arguments of the checkpoint, read off the tensor shapes."""
    embed, in_chans, patch, _ = state["patch_embed.proj.weight"].shape
    grid = state["pos_embed"].shape[1]
    depth = 1 + max(int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m)
    use_rel_pos = "blocks.0.attn.rel_pos_h" in state
    head_dim = state["blocks.0.attn.rel_pos_h"].shape[1] if use_rel_pos else None
    if head_dim is None:
        raise QueryEncoderError("SAM encoders without relative positions are not supported (the number of heads "
                                "cannot be read off the weights)")
    window_size, global_blocks = 0, []
    for b in range(depth):
        length = state[f"blocks.{b}.attn.rel_pos_h"].shape[0]
        if length == 2 * grid - 1:
            global_blocks.append(b)
        else:
            window_size = (length + 1) // 2
    return {"img_size": grid * patch, "patch_size": patch, "in_chans": in_chans, "embed_dim": embed, "depth": depth,
            "num_heads": embed // head_dim, "mlp_ratio": state["blocks.0.mlp.lin1.weight"].shape[0] / embed,
            "out_chans": state["neck.0.weight"].shape[0], "qkv_bias": "blocks.0.attn.qkv.bias" in state,
            "use_rel_pos": use_rel_pos, "window_size": window_size, "global_attn_indexes": tuple(global_blocks)}


def resize_for_image_size(state: Mapping[str, torch.Tensor], config: dict, image_size: int) -> Dict[str, torch.Tensor]:
    """Position embedding bilinearly to the new token grid; global blocks' relative-position tables linearly to
    2 * grid - 1 (windowed blocks keep their window)."""
    if image_size % config["patch_size"]:
        raise QueryEncoderError(f"query image size {image_size} is not a multiple of the patch size "
                                f"{config['patch_size']}")
    grid = image_size // config["patch_size"]
    resized = dict(state)
    pos = state["pos_embed"].permute(0, 3, 1, 2).float()
    resized["pos_embed"] = F.interpolate(pos, size=(grid, grid), mode="bilinear", align_corners=False) \
        .permute(0, 2, 3, 1).to(state["pos_embed"].dtype)
    for b in config["global_attn_indexes"]:
        for axis in ("h", "w"):
            key = f"blocks.{b}.attn.rel_pos_{axis}"
            table = state[key]
            if table.shape[0] != 2 * grid - 1:
                resized[key] = F.interpolate(table.t()[None].float(), size=2 * grid - 1, mode="linear",
                                             align_corners=False)[0].t().to(table.dtype)
    return resized


def load_sam_query_encoder(path: Optional[str] = None, image_size: int = 224) -> nn.Module:
    """The frozen SAM image encoder from a local checkpoint (default: $nnUNet_universal_sam_checkpoint)."""
    from segment_anything.modeling import ImageEncoderViT

    path = path or os.environ.get(SAM_CHECKPOINT_ENV)
    if not path:
        raise QueryEncoderError(f"no SAM checkpoint given: set {SAM_CHECKPOINT_ENV} to the local path of "
                                f"sam_vit_b_01ec64.pth (nothing is downloaded)")
    if not os.path.isfile(path):
        raise QueryEncoderError(f"SAM checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files
        raise QueryEncoderError(f"cannot read SAM checkpoint {path}: {e}") from e
    state = _encoder_state_dict(state, path)
    config = sam_encoder_config(state)
    state = resize_for_image_size(state, config, image_size)
    config.update(img_size=image_size, norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU)
    encoder = ImageEncoderViT(**config)
    encoder.load_state_dict(state, strict=True)
    encoder.eval().requires_grad_(False)
    encoder.checkpoint_id = checkpoint_id(path, image_size)
    return encoder


def checkpoint_id(path: str, image_size: int) -> str:
    """Identifies (checkpoint file contents, query size) for cache invalidation."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{digest.hexdigest()[:16]}_{image_size}"


def sam_input(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, H, W) grey frames (any intensity scale) -> (B, 3, S, S) SAM input: each frame min-max rescaled to
    0..255, replicated to RGB, normalised with SAM's pixel mean/std, resized to S x S."""
    frames = frames.float()
    low = frames.flatten(1).amin(1)[:, None, None]
    high = frames.flatten(1).amax(1)[:, None, None]
    scaled = (frames - low) / (high - low).clamp_min(1e-6) * 255.0
    mean = torch.tensor(SAM_PIXEL_MEAN, device=frames.device)[None, :, None, None]
    std = torch.tensor(SAM_PIXEL_STD, device=frames.device)[None, :, None, None]
    rgb = (scaled[:, None].expand(-1, 3, -1, -1) - mean) / std
    if rgb.shape[-2:] != (image_size, image_size):
        rgb = F.interpolate(rgb, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return rgb


@torch.no_grad()
def first_frame_query(encoder: nn.Module, clips: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, C, T, H, W) clips -> (B, D) queries: SAM neck output of frame 0 (channel 0), averaged over space."""
    device = next(encoder.parameters()).device
    out = encoder(sam_input(clips[:, 0, 0].to(device), image_size))
    return out.mean(dim=(2, 3)).to(clips.device)


class QueryCache:
    """Case id -> query (D,) on disk, for one SAM checkpoint and query size; written atomically."""

    def __init__(self, folder: str, encoder_id: str):
        self.file = os.path.join(folder, f"sam_queries_{encoder_id}.pt")
        self.queries: Dict[str, torch.Tensor] = {}
        if os.path.isfile(self.file):
            self.queries = torch.load(self.file, map_location="cpu", weights_only=True)

    def missing(self, case_ids: Iterable[str]):
        return [c for c in case_ids if c not in self.queries]

    def update(self, queries: Mapping[str, torch.Tensor]) -> None:
        self.queries.update({k: v.detach().cpu() for k, v in queries.items()})

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        tmp = f"{self.file}.{os.getpid()}.tmp"
        torch.save(self.queries, tmp)
        os.replace(tmp, self.file)

    def stack(self, case_ids: Iterable[str]) -> torch.Tensor:
        try:
            return torch.stack([self.queries[c] for c in case_ids])
        except KeyError as e:
            raise KeyError(f"no cached SAM query for case {e.args[0]}; the cache is filled before training") from None
