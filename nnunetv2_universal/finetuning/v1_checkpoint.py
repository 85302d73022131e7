"""Import the authors' released UniSeg checkpoint (nnU-Net v1 `.model` file) into our UniSegNetwork.

The v1 names map one to one onto ours (docs/reference/v1-checkpoint.md lists the rules); the released network uses
the reference's decoder details, i.e. our `paper` plans template (3x3x3 last decoder stage, no bias on transposed
convs and heads). The architecture (depth, widths, kernels, strides, stems, tasks, classes, patch) is read off the
checkpoint's tensor shapes, the mapped weights are loaded strictly into that network, and the result is written as
an nnU-Net v2 checkpoint ({'network_weights': ...}) that our predictor and `nnUNetv2_universal_export_backbone`
read. Loading avoids executing pickled code unless --allow_pickle is given for a trusted file.
"""
from __future__ import annotations

import re
from typing import Dict, List

import torch
from torch import nn

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.finetuning.weights import load_checkpoint_safely, refuse_v2_checkpoint
from nnunetv2_universal.networks.uniseg import UniSegNetwork

_RULES = [
    # stems of level 0, first conv
    (re.compile(r"^conv_blocks_context\.0\.blocks\.0\.conv_(\d+)\.(weight|bias)$"),
     lambda m: f"encoder.stages.0.0.convs.0.conv.conv_{m[1]}.{m[2]}"),
    # bottleneck: one StackedConvLayers per conv
    (re.compile(r"^conv_blocks_context\.(\d+)\.(\d+)\.blocks\.0\.(conv|instnorm)\.(weight|bias)$"),
     lambda m: f"encoder.stages.{m[1]}.0.convs.{m[2]}.{_NORM.get(m[3], m[3])}.{m[4]}"),
    (re.compile(r"^conv_blocks_context\.(\d+)\.blocks\.(\d+)\.(conv|instnorm)\.(weight|bias)$"),
     lambda m: f"encoder.stages.{m[1]}.0.convs.{m[2]}.{_NORM.get(m[3], m[3])}.{m[4]}"),
    (re.compile(r"^conv_blocks_localization\.(\d+)\.(\d+)\.blocks\.0\.(conv|instnorm)\.(weight|bias)$"),
     lambda m: f"decoder.stages.{m[1]}.convs.{m[2]}.{_NORM.get(m[3], m[3])}.{m[4]}"),
    (re.compile(r"^tu\.(\d+)\.weight$"), lambda m: f"decoder.transpconvs.{m[1]}.weight"),
    (re.compile(r"^seg_outputs\.(\d+)\.weight$"), lambda m: f"decoder.seg_layers.{m[1]}.weight"),
    (re.compile(r"^fusion_layer\.blocks\.(\d+)\.(conv|instnorm)\.(weight|bias)$"),
     lambda m: f"fuse.{m[1]}.{_NORM.get(m[2], m[2])}.{m[3]}"),
    (re.compile(r"^intermedia_prompt$"), lambda m: "prompt"),
]
_NORM = {"instnorm": "norm"}


def v1_key_to_v2(key: str) -> str:
    key = key[len("module."):] if key.startswith("module.") else key
    for pattern, target in _RULES:
        m = pattern.match(key)
        if m:
            return target(m)
    raise KeyError(f"unknown key in a UniSeg v1 checkpoint: {key!r}")


def map_v1_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    mapped = {}
    for key, value in state.items():
        new = v1_key_to_v2(key)
        if new in mapped:
            raise ValueError(f"two v1 keys map to {new}")
        mapped[new] = value
    return mapped


def architecture_from_weights(mapped: Dict[str, torch.Tensor]) -> dict:
    """UniSegNetwork kwargs (paper conventions: Conv3d, InstanceNorm, LeakyReLU 0.01) read off tensor shapes."""
    stages = sorted({int(k.split(".")[2]) for k in mapped if k.startswith("encoder.stages.")})
    n_stages = len(stages)
    features, kernels, n_convs = [], [], []
    for s in stages:
        convs = sorted({int(k.split(".")[5]) for k in mapped if k.startswith(f"encoder.stages.{s}.0.convs.")})
        n_convs.append(len(convs))
        w = mapped[f"encoder.stages.{s}.0.convs.{len(convs) - 1}.conv.weight"]
        features.append(int(w.shape[0]))
        kernels.append([int(k) for k in w.shape[2:]])
    # strides: transposed conv u upsamples decoder stage u (lowest resolution first) by its kernel size
    n_up = n_stages - 1
    up = [[int(k) for k in mapped[f"decoder.transpconvs.{u}.weight"].shape[2:]] for u in range(n_up)]
    strides = [[1, 1, 1]] + up[::-1]
    stems = sorted(int(k.split("conv_")[1].split(".")[0]) for k in mapped if ".conv.conv_" in k and
                   k.endswith(".weight"))
    prompt = mapped["prompt"]
    total = [1, 1, 1]
    for s in strides:
        total = [t * x for t, x in zip(total, s)]
    decoder_kernels = [[int(k) for k in mapped[f"decoder.stages.{u}.convs.0.conv.weight"].shape[2:]]
                       for u in range(n_up)]
    n_conv_dec = [len({k.split(".")[4] for k in mapped if k.startswith(f"decoder.stages.{u}.convs.")})
                  for u in range(n_up)]
    return dict(input_channels=stems[0], n_stages=n_stages, features_per_stage=features, conv_op=nn.Conv3d,
                kernel_sizes=kernels, strides=strides, n_conv_per_stage=n_convs,
                num_classes=int(mapped["decoder.seg_layers.0.weight"].shape[0]), n_conv_per_stage_decoder=n_conv_dec,
                num_tasks=int(prompt.shape[1]), patch_size=[p * t for p, t in zip(prompt.shape[2:], total)],
                stem_channels=stems, conv_bias=True, norm_op=nn.InstanceNorm3d,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                nonlin_kwargs={"negative_slope": 1e-2, "inplace": True}, deep_supervision=True,
                decoder_kernel_sizes=decoder_kernels, transpconv_bias="decoder.transpconvs.0.bias" in mapped,
                seg_bias="decoder.seg_layers.0.bias" in mapped)


def network_from_v1_state_dict(state: Dict[str, torch.Tensor]) -> UniSegNetwork:
    """A UniSegNetwork holding the v1 weights (every real tensor loaded; only d-n-a alias names filled)."""
    mapped = map_v1_state_dict(state)
    network = UniSegNetwork(**architecture_from_weights(mapped))
    missing, unexpected = network.load_state_dict(mapped, strict=False)
    real_missing = [k for k in missing if ".all_modules." not in k]
    if real_missing or unexpected:
        raise ValueError(f"v1 checkpoint does not fit the network: missing {real_missing[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    return network


def convert_v1_checkpoint(model_file: str, output_file: str, allow_pickle: bool = False) -> UniSegNetwork:
    checkpoint = load_checkpoint_safely(model_file, allow_pickle)
    refuse_v2_checkpoint(checkpoint, model_file)
    state = checkpoint.get("state_dict", checkpoint)
    network = network_from_v1_state_dict(state)
    torch.save({"network_weights": network.state_dict(), "trainer_name": "UniSegTrainer",
                "source": f"UniSeg v1 checkpoint {model_file}"}, output_file)
    return network


def architecture_summary(network: UniSegNetwork) -> List[str]:
    return [f"parameters: {sum(p.numel() for p in network.parameters()):,}",
            f"tasks: {network.num_tasks}, classes: {network.num_classes}, stems: {list(network.stem.channel_counts)}",
            f"prompt: {tuple(network.prompt.shape)}"]


@console_command
def main(argv=None):
    p = command_parser(description="Convert the released UniSeg v1 checkpoint (.model) to our format.")
    p.add_argument("-i", required=True, help="model_final_checkpoint.model (nnU-Net v1)")
    p.add_argument("-o", required=True, help="output .pth ({'network_weights': ...})")
    p.add_argument("--allow_pickle", action="store_true", help="allow pickled code while loading (trusted files)")
    args = p.parse_args(argv)
    network = convert_v1_checkpoint(args.i, args.o, args.allow_pickle)
    print("\n".join(architecture_summary(network) + [f"written to {args.o}"]))


if __name__ == "__main__":
    main()
