"""What each method costs on top of the network it extends, measured side by side in one run (`make bench`).

    python benchmarks/method_overheads.py [--device cuda] [--paper] [--iters 5] [--only ROW ...] [--out results.json]

Rows (each a ratio method / baseline, same inputs, same step: forward + backward + SGD step):
- all-tasks prediction: UniSeg's encoder + FUSE once and 11 decoder passes vs 11 separate conditioned forwards,
  plus the FLOP floor of that ratio (torch's FLOP counter);
- echo training step with the cached query vs the same backbone without prompt pool / text / dynamic heads
  (PlainConvUNet of the echo template), and the one-off SAM ViT-B query per case (random weights);
- M4oE layer (2 experts + gate) vs the plain MLP it replaces, at Swin-T's first stage (56 x 56 tokens x 96);
- Hermes (prior fusion + posterior heads) vs the bare residual U-Net it is built on.
CPU default sizes are small (minutes on 2 cores); `--paper` uses the papers' sizes (GPU).
"""
from __future__ import annotations

import argparse
import json
import pydoc
import time
from typing import Callable, Dict

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_universal.collection.templates import ECHO, PAPER
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.networks.echo_prompt import EchoPromptNetwork
from nnunetv2_universal.networks.hermes import HermesNetwork
from nnunetv2_universal.networks.moe import MoEMLP
from nnunetv2_universal.networks.uniseg import UniSegNetwork


def _arch(template: dict, **overrides) -> dict:
    kw = {**template["arch_kwargs"], **overrides}
    for k in template["_kw_requires_import"]:
        kw[k] = pydoc.locate(kw[k]) if kw[k] else None
    return kw


def timed(step: Callable[[], None], device: str, iters: int, warmup: int = 2) -> float:
    times = []
    for i in range(iters + warmup):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def train_step(net: nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        out = forward()
        out = out[0] if isinstance(out, (list, tuple)) else out
        out.float().square().mean().backward()
        opt.step()
    return step


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def all_tasks_prediction(device: str, paper: bool, iters: int) -> Dict:
    patch = [64, 192, 192] if paper else [16, 64, 64]
    net = UniSegNetwork(input_channels=1, num_classes=4, num_tasks=11, patch_size=patch, deep_supervision=False,
                        **_arch(PAPER)).to(device).eval()
    x = torch.randn(1, 1, *patch, device=device)
    conditions = [Condition(task=t) for t in range(11)]

    def together():
        return net.forward_tasks(x, conditions)

    def separately():
        return [net(x, c) for c in conditions]
    with torch.no_grad():
        t_together, t_separate = timed(together, device, iters), timed(separately, device, iters)
    return {"patch": patch, "together_s": t_together, "separate_s": t_separate, "ratio": t_together / t_separate,
            "flop_floor_ratio": flops(together) / flops(separately), "target": "<= 0.6"}


def echo_step(device: str, paper: bool, iters: int) -> Dict:
    patch = [16, 224, 224] if paper else [16, 64, 64]
    batch = 5 if paper else 1
    kw = _arch(ECHO)
    echo_only = {k: kw.pop(k) for k in list(kw) if k in ("num_views", "prompts_per_view", "prompt_length", "top_k",
                                                          "query_dim", "query_image_size", "text_dim", "score_dim",
                                                          "code_dim", "head_channels", "text_mode",
                                                          "prompt_selection", "train_view_masking")}
    echo = EchoPromptNetwork(input_channels=1, num_classes=2, **kw, **echo_only).to(device).train()
    echo.class_embeddings.normal_()
    echo.class_embeddings_ready.fill_(True)
    bare = PlainConvUNet(input_channels=1, num_classes=2, deep_supervision=False, **kw).to(device).train()
    x = torch.randn(batch, 1, *patch, device=device)
    query, views = torch.randn(batch, 256, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    t_echo = timed(train_step(echo, lambda: echo(x, query=query, views=views)), device, iters)
    t_bare = timed(train_step(bare, lambda: bare(x)), device, iters)
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT
    sam = ImageEncoderViT(img_size=224, embed_dim=768, depth=12, num_heads=12, out_chans=256, qkv_bias=True,
                          norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                          global_attn_indexes=(2, 5, 8, 11), window_size=14).to(device).eval()
    with torch.no_grad():
        t_query = timed(lambda: sam(torch.randn(1, 3, 224, 224, device=device)), device, max(2, iters // 2), 1)
    return {"patch": patch, "batch": batch, "echo_step_s": t_echo, "backbone_step_s": t_bare,
            "ratio": t_echo / t_bare, "target": "<= 1.10", "sam_query_per_case_s": t_query,
            "params_echo": sum(p.numel() for p in echo.parameters()),
            "params_backbone": sum(p.numel() for p in bare.parameters())}


def moe_layer(device: str, paper: bool, iters: int) -> Dict:
    tokens = torch.randn(8 if paper else 2, 56 * 56, 96, device=device)
    moe = MoEMLP(96, 2).to(device)
    mlp = nn.Sequential(nn.Linear(96, 384), nn.GELU(), nn.Linear(384, 96)).to(device)
    t_moe = timed(train_step(moe, lambda: moe(tokens)), device, iters)
    t_mlp = timed(train_step(mlp, lambda: mlp(tokens)), device, iters)
    return {"tokens": list(tokens.shape), "moe_s": t_moe, "mlp_s": t_mlp, "ratio": t_moe / t_mlp,
            "params_moe": sum(p.numel() for p in moe.parameters()),
            "params_mlp": sum(p.numel() for p in mlp.parameters())}


def hermes(device: str, paper: bool, iters: int) -> Dict:
    patch = [128, 128, 128] if paper else [32, 64, 64]
    kw = dict(input_channels=1, n_stages=5, features_per_stage=[32, 64, 128, 256, 320], conv_op=nn.Conv3d,
              kernel_sizes=3, strides=[1, 2, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 2, 2],
              n_conv_per_stage_decoder=2, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
              nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    net = HermesNetwork(num_classes=1, num_global_tasks=71, **kw).to(device).train()
    bare = ResidualEncoderUNet(num_classes=8, deep_supervision=False, **kw).to(device).train()
    x = torch.randn(1, 1, *patch, device=device)
    ids, modality = torch.arange(8, device=device)[None], torch.zeros(1, dtype=torch.long, device=device)
    t_hermes = timed(train_step(net, lambda: net(x, task_ids=ids, modality_ids=modality)), device, iters)
    t_bare = timed(train_step(bare, lambda: bare(x)), device, iters)
    return {"patch": patch, "hermes_s": t_hermes, "bare_s": t_bare, "ratio": t_hermes / t_bare,
            "params_hermes": sum(p.numel() for p in net.parameters()),
            "params_bare": sum(p.numel() for p in bare.parameters())}


ROWS = {"all_tasks_prediction": all_tasks_prediction, "echo_step": echo_step, "m4oe_layer": moe_layer,
        "hermes": hermes}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--paper", action="store_true", help="the papers' sizes (GPU)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--only", nargs="+", default=None, choices=list(ROWS), help="run only these rows")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    results = {"device": a.device if a.device == "cpu" else torch.cuda.get_device_name(), "torch": torch.__version__,
               "paper_sizes": a.paper}
    for name, fn in ROWS.items():
        if a.only and name not in a.only:
            continue
        results[name] = fn(a.device, a.paper, a.iters)
        print(name, json.dumps(results[name]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
