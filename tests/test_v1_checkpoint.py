"""The v1 (reference) checkpoint import: a synthetic checkpoint with the reference's key names and shapes, built
from the documented key map, converts and loads; the converted network reproduces an independent functional
forward written directly on the v1 tensors."""
from __future__ import annotations

from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_universal.finetuning.v1_checkpoint import convert_v1_checkpoint, network_from_v1_state_dict


def v1_state_dict(features: List[int], kernels: List[List[int]], strides: List[List[int]], num_tasks: int,
                  num_classes: int, prompt: List[int], stems=(1, 2, 4), seed: int = 0) -> Dict[str, torch.Tensor]:
    """Reference key names and shapes (uniseg.md §13): context levels, bottleneck, localization, tu, seg_outputs,
    fusion_layer, intermedia_prompt. Decoder stage u uses the kernel of encoder level n-1-u (reference rule)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    n = len(features)
    sd = {}
    for d in range(n - 1):
        c_in = features[d - 1] if d else None
        for j in range(2):
            if d == 0 and j == 0:
                for c in stems:
                    sd[f"conv_blocks_context.0.blocks.0.conv_{c}.weight"] = t(features[0], c, *kernels[0])
                    sd[f"conv_blocks_context.0.blocks.0.conv_{c}.bias"] = t(features[0])
            else:
                cin = c_in if j == 0 else features[d]
                sd[f"conv_blocks_context.{d}.blocks.{j}.conv.weight"] = t(features[d], cin, *kernels[d])
                sd[f"conv_blocks_context.{d}.blocks.{j}.conv.bias"] = t(features[d])
            sd[f"conv_blocks_context.{d}.blocks.{j}.instnorm.weight"] = 1 + t(features[d])
            sd[f"conv_blocks_context.{d}.blocks.{j}.instnorm.bias"] = t(features[d])
    b = n - 1
    for j in range(2):
        cin = features[b - 1] if j == 0 else features[b]
        sd[f"conv_blocks_context.{b}.{j}.blocks.0.conv.weight"] = t(features[b], cin, *kernels[b])
        sd[f"conv_blocks_context.{b}.{j}.blocks.0.conv.bias"] = t(features[b])
        sd[f"conv_blocks_context.{b}.{j}.blocks.0.instnorm.weight"] = 1 + t(features[b])
        sd[f"conv_blocks_context.{b}.{j}.blocks.0.instnorm.bias"] = t(features[b])
    for u in range(n - 1):
        below = features[n - 1 - u] + (1 if u == 0 else 0)
        skip = features[n - 2 - u]
        sd[f"tu.{u}.weight"] = t(below, skip, *strides[n - 1 - u])
        for j in range(2):
            cin = 2 * skip if j == 0 else skip
            sd[f"conv_blocks_localization.{u}.{j}.blocks.0.conv.weight"] = t(skip, cin, *kernels[n - 1 - u])
            sd[f"conv_blocks_localization.{u}.{j}.blocks.0.conv.bias"] = t(skip)
            sd[f"conv_blocks_localization.{u}.{j}.blocks.0.instnorm.weight"] = 1 + t(skip)
            sd[f"conv_blocks_localization.{u}.{j}.blocks.0.instnorm.bias"] = t(skip)
        sd[f"seg_outputs.{u}.weight"] = t(num_classes, skip, 1, 1, 1)
    fuse_in = features[-1] + num_tasks
    hidden = fuse_in // 4
    for i, (ci, co) in enumerate(((fuse_in, hidden), (hidden, hidden), (hidden, num_tasks))):
        sd[f"fusion_layer.blocks.{i}.conv.weight"] = t(co, ci, 3, 3, 3)
        sd[f"fusion_layer.blocks.{i}.conv.bias"] = t(co)
        sd[f"fusion_layer.blocks.{i}.instnorm.weight"] = 1 + t(co)
        sd[f"fusion_layer.blocks.{i}.instnorm.bias"] = t(co)
    sd["intermedia_prompt"] = torch.randn(1, num_tasks, *prompt, generator=g)
    return sd


def _block(x, sd, prefix, stride=1):
    w = sd[prefix + "conv.weight"]
    x = F.conv3d(x, w, sd[prefix + "conv.bias"], stride=stride, padding=[(k - 1) // 2 for k in w.shape[2:]])
    x = F.instance_norm(x, weight=sd[prefix + "instnorm.weight"], bias=sd[prefix + "instnorm.bias"], eps=1e-5)
    return F.leaky_relu(x, 0.01)


def reference_forward(sd, x, task: int, strides) -> List[torch.Tensor]:
    """The reference network's computation, written directly on the v1 tensors (independent of our modules)."""
    n = len(strides)
    skips = []
    for d in range(n - 1):
        for j in range(2):
            if d == 0 and j == 0:
                c = x.shape[1]
                w = sd[f"conv_blocks_context.0.blocks.0.conv_{c}.weight"]
                x = F.conv3d(x, w, sd[f"conv_blocks_context.0.blocks.0.conv_{c}.bias"],
                             padding=[(k - 1) // 2 for k in w.shape[2:]])
                x = F.leaky_relu(F.instance_norm(x, weight=sd["conv_blocks_context.0.blocks.0.instnorm.weight"],
                                                 bias=sd["conv_blocks_context.0.blocks.0.instnorm.bias"], eps=1e-5),
                                 0.01)
            else:
                x = _block(x, sd, f"conv_blocks_context.{d}.blocks.{j}.", strides[d] if j == 0 else 1)
        skips.append(x)
    x = _block(x, sd, f"conv_blocks_context.{n - 1}.0.blocks.0.", strides[n - 1])
    x = _block(x, sd, f"conv_blocks_context.{n - 1}.1.blocks.0.")
    prompt = sd["intermedia_prompt"].expand(x.shape[0], -1, -1, -1, -1)
    fused = torch.cat((x, prompt), 1)
    for i in range(3):
        fused = _block(fused, sd, f"fusion_layer.blocks.{i}.")
    x = torch.cat((x, fused[:, task:task + 1]), 1)
    outputs = []
    for u in range(n - 1):
        x = F.conv_transpose3d(x, sd[f"tu.{u}.weight"], stride=strides[n - 1 - u])
        x = torch.cat((x, skips[n - 2 - u]), 1)
        x = _block(x, sd, f"conv_blocks_localization.{u}.0.blocks.0.")
        x = _block(x, sd, f"conv_blocks_localization.{u}.1.blocks.0.")
        outputs.append(F.conv3d(x, sd[f"seg_outputs.{u}.weight"]))
    return outputs[::-1]


PAPER = dict(features=[32, 64, 128, 256, 320, 320], kernels=[[1, 3, 3]] + [[3, 3, 3]] * 5,
             strides=[[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * 4, num_tasks=11, num_classes=4, prompt=[4, 6, 6])
SMALL = dict(features=[4, 8, 8, 12], kernels=[[1, 3, 3]] + [[3, 3, 3]] * 3,
             strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], num_tasks=3, num_classes=4, prompt=[2, 2, 2])


def test_full_size_reference_checkpoint_converts_with_exact_parameter_count(tmp_path):
    sd = v1_state_dict(**PAPER)
    assert len(sd) == 115 and sum(v.numel() for v in sd.values()) == 32_114_381  # the reference's numbers
    model_file = tmp_path / "model_final_checkpoint.model"
    torch.save({"state_dict": sd, "epoch": 1000}, model_file)
    network = convert_v1_checkpoint(str(model_file), str(tmp_path / "converted.pth"))
    assert sum(p.numel() for p in network.parameters()) == 32_114_381
    assert tuple(network.prompt.shape) == (1, 11, 4, 6, 6)
    assert torch.equal(network.prompt.detach(), sd["intermedia_prompt"])
    assert torch.equal(network.decoder.transpconvs[0].weight.detach(), sd["tu.0.weight"])
    assert torch.equal(network.stem.conv_4.weight.detach(), sd["conv_blocks_context.0.blocks.0.conv_4.weight"])
    converted = torch.load(tmp_path / "converted.pth", map_location="cpu", weights_only=True)
    assert set(converted["network_weights"]) == set(network.state_dict())


@pytest.mark.parametrize("channels,task", [(1, 0), (2, 1), (4, 2)])
def test_converted_network_reproduces_reference_outputs(channels, task):
    sd = v1_state_dict(**SMALL, seed=channels)
    network = network_from_v1_state_dict(sd).eval()
    x = torch.randn(2, channels, 8, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = network(x, task)
        ref = reference_forward(sd, x, task, SMALL["strides"])
    assert len(ours) == len(ref) == 3
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert torch.max(torch.abs(a - b)) < 1e-4


def test_unknown_key_is_reported():
    sd = v1_state_dict(**SMALL)
    sd["something_else.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="something_else"):
        network_from_v1_state_dict(sd)


def test_full_size_converted_network_matches_reference_forward():
    """The real configuration (32,114,381 parameters, 64x192x192 patch): outputs equal within 1e-4 (~40 s)."""
    sd = v1_state_dict(**PAPER, seed=3)
    network = network_from_v1_state_dict(sd).eval()
    x = torch.randn(1, 4, 64, 192, 192, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = network(x, 9)
        ref = reference_forward(sd, x, 9, PAPER["strides"])
    assert [tuple(o.shape) for o in ours] == [(1, 4, 64, 192, 192), (1, 4, 64, 96, 96), (1, 4, 32, 48, 48),
                                              (1, 4, 16, 24, 24), (1, 4, 8, 12, 12)]
    for a, b in zip(ours, ref):
        assert torch.max(torch.abs(a - b)) < 1e-4
