"""Plans templates: the shared part of a collection's plans (architecture, patch, batch).

The per-task part (spacing, normalisation) comes from the registry and the members' fingerprints. The JSON
copies in the repository's `plans/` folder are the documented form of these templates (a test keeps them equal);
`-pl` accepts a template name or the path of such a JSON file.
"""
from __future__ import annotations

import copy
import json
import os

UNISEG_NETWORK = "nnunetv2_universal.networks.uniseg.UniSegNetwork"
_REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

# UniSeg paper (reference implementation): 6 stages 32..320, 64x192x192 patch, batch 2, reference decoder details.
PAPER = {
    "plans_name": "UniSegPlans",
    "batch_size": 2,
    "patch_size": [64, 192, 192],
    "batch_dice": False,
    "network_class_name": UNISEG_NETWORK,
    "arch_kwargs": {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": 2,
        "n_conv_per_stage_decoder": 2,
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"negative_slope": 0.01, "inplace": True},
        "decoder_kernel_sizes": [[3, 3, 3]] * 5,
        "transpconv_bias": False,
        "seg_bias": False,
    },
    "_kw_requires_import": _REQUIRES_IMPORT,
}

# A small network and patch that trains in minutes on 2 CPU cores (demo and tests).
CPU_DEMO = copy.deepcopy(PAPER)
CPU_DEMO.update({
    "plans_name": "UniSegPlansCPUDemo",
    "batch_size": 2,
    "patch_size": [16, 32, 32],
})
CPU_DEMO["arch_kwargs"].update({
    "n_stages": 4,
    "features_per_stage": [8, 16, 32, 32],
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
    "decoder_kernel_sizes": [[3, 3, 3]] * 3,
})

ECHO_NETWORK = "nnunetv2_universal.networks.echo_prompt.EchoPromptNetwork"

# Echo model (Kim et al.): 16-frame 224x224 clips, batch 5. Time is the first axis and is pooled only in the deep
# stages (16 -> 4), so early features keep every frame; space 224 -> 7. Query/text sizes: SAM ViT neck (256) and
# ClinicalBERT (768).
ECHO = {
    "plans_name": "EchoPlans",
    "batch_size": 5,
    "patch_size": [16, 224, 224],
    "batch_dice": False,
    "network_class_name": ECHO_NETWORK,
    "arch_kwargs": {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        "n_conv_per_stage": [2] * 6,
        "n_conv_per_stage_decoder": [2] * 5,
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
        "num_views": 3,
        "prompts_per_view": 3,
        "prompt_length": 5,
        "top_k": 3,
        "query_dim": 256,
        "query_image_size": 224,
        "text_dim": 768,
        "score_dim": 64,
        "code_dim": 256,
        "head_channels": 8,
        "text_mode": "clinicalbert",
        "prompt_selection": "pool",
        "train_view_masking": True,
    },
    "_kw_requires_import": _REQUIRES_IMPORT,
}

SWIN_UNET_MOE_NETWORK = "nnunetv2_universal.networks.swin_unet_moe.SwinUNetMoE"

# M4oE's Swin-UNet (Swin-T, 224 x 224 slices) for nnU-Net's `2d` configuration: plan with `-c 2d`. Whole slices as
# the paper (which resizes every slice to 224 x 224): each task's in-plane spacing is coarsened until its largest
# slice fits the patch (nnU-Net resamples predictions back to the original geometry). Batch 36 as the paper.
M4OE_SWIN = {
    "plans_name": "M4oESwinPlans",
    "batch_size": 36,
    "patch_size": [224, 224],
    "batch_dice": False,
    "whole_slices": True,
    "network_class_name": SWIN_UNET_MOE_NETWORK,
    "arch_kwargs": {"num_experts": 3, "moe_in": "both", "gate_mode": "paper", "embed_dim": 96,
                    "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "token_patch": 4,
                    "drop_path_rate": 0.2},
    "_kw_requires_import": [],
}

HERMES_NETWORK = "nnunetv2_universal.networks.hermes.HermesNetwork"

# Hermes-R (Gao et al., CVPR 2024; reference configuration): pre-activation residual U-Net 32..320 with max-pooling
# and trilinear up-sampling, prior fusion at 1/4, 1/8, 1/16 and back at 1/8, 1/4 (posterior 128 + 256 + 320 + 256 +
# 128 = 1088), 10 modality tokens; 128^3 crops at 1.5 mm isotropic for every dataset, batch 2 per GPU. With the
# reference's 72 task rows: 60.9 M parameters (the reference: 60.88 M).
HERMES = {
    "plans_name": "HermesPlans",
    "batch_size": 2,
    "patch_size": [128, 128, 128],
    "spacing": [1.5, 1.5, 1.5],
    "ct_clip_zscore": [-991.0, 500.0],  # the reference: CT clipped, then z-scored per image (collection/normalization.py)
    "zscore_clip_p2_p98": True,  # the reference: MR / PET clipped to the image's 2nd / 98th percentiles, then z-scored
    "batch_dice": False,
    "network_class_name": HERMES_NETWORK,
    "arch_kwargs": {
        "n_stages": 5,
        "features_per_stage": [32, 64, 128, 256, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 5,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4,
        "n_blocks_per_stage": [1, 2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2, 2],
        "conv_bias": False,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.ReLU",
        "nonlin_kwargs": {"inplace": True},
        "backbone": "preact",
        "modality_tokens": 10,
        "fusion_depth": 2,
        "bottleneck_fusion_depth": 4,
        "fusion_min_downsampling": 4,
    },
    "_kw_requires_import": _REQUIRES_IMPORT,
}

TEMPLATES = {"paper": PAPER, "cpu_demo": CPU_DEMO, "echo": ECHO, "m4oe_swin": M4OE_SWIN, "hermes": HERMES}
REQUIRED_KEYS = {"plans_name", "batch_size", "patch_size", "network_class_name", "arch_kwargs"}


def load_template(name_or_path: str) -> dict:
    """A template by name (`paper`, `cpu_demo`, `echo`, `m4oe_swin`, `hermes`) or from a JSON file. An optional
    `spacing` sets every task's target spacing (methods that resample all datasets alike, as Hermes);
    `whole_slices` coarsens each task's in-plane spacing so that every slice fits the patch (M4oE's Swin-UNet);
    `ct_clip_zscore: [low, high]` clips CT channels to [low, high] and z-scores each image instead of the registry's
    CT window (Hermes' reference: [-991, 500]); `zscore_clip_p2_p98: true` clips z-scored channels (MR, PET) to
    each image's 2nd / 98th percentiles first (the reference); `antialias: true` smooths images before they are
    downsampled to a task's spacing (nnunetv2_universal/collection/resampling.py; nnU-Net does not)."""
    if name_or_path in TEMPLATES:
        return copy.deepcopy(TEMPLATES[name_or_path])
    if not os.path.isfile(name_or_path):
        raise FileNotFoundError(f"plans template {name_or_path!r} is neither a file nor one of {sorted(TEMPLATES)}")
    with open(name_or_path) as f:
        template = json.load(f)
    missing = REQUIRED_KEYS - set(template)
    if missing:
        raise ValueError(f"plans template {name_or_path} lacks {sorted(missing)}")
    template.setdefault("batch_dice", False)
    template.setdefault("_kw_requires_import", _REQUIRES_IMPORT)
    return template
