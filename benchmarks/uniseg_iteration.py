"""Training-iteration time and peak memory of UniSegNetwork vs stock PlainConvUNet (same stages, kernels and
strides), both with the paper's patch 64x192x192 and batch 2, measured in the same run.

    python benchmarks/uniseg_iteration.py [--device cuda] [--iters 20] [--out results.json]

Reports ratios (UniSeg / stock) as well as absolute numbers; on CPU use --patch 16 64 64 (full size is slow)."""
from __future__ import annotations

import argparse
import json
import pydoc
import time

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunetv2_universal.collection.templates import PAPER
from nnunetv2_universal.networks.uniseg import UniSegNetwork


def _kwargs():
    kw = dict(PAPER["arch_kwargs"])
    for k in PAPER["_kw_requires_import"]:
        kw[k] = pydoc.locate(kw[k]) if kw[k] else None
    return kw


def build(kind: str, patch):
    kw = _kwargs()
    if kind == "uniseg":
        return UniSegNetwork(input_channels=1, num_classes=4, num_tasks=11, patch_size=patch, stem_channels=[1, 2, 4],
                             deep_supervision=True, **kw)
    for k in ("decoder_kernel_sizes", "transpconv_bias", "seg_bias"):
        kw.pop(k)
    return PlainConvUNet(input_channels=1, num_classes=4, deep_supervision=True, **kw)


def measure(kind: str, device: str, patch, batch: int, iters: int) -> dict:
    torch.manual_seed(0)
    net = build(kind, patch).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler(device) if device == "cuda" else None
    x = torch.randn(batch, 1, *patch, device=device)
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup = 10
    for i in range(iters + warmup):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, enabled=device == "cuda"):
            out = net(x, 3) if kind == "uniseg" else net(x)
            loss = sum(o[:, :3].float().square().mean() for o in out)  # sliced to a 3-class task
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    result = {"params": sum(p.numel() for p in net.parameters()), "median_iter_s": times[len(times) // 2]}
    if device == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--patch", nargs=3, type=int, default=[64, 192, 192])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer
    # Measured twice in alternating order; the second round is reported (the first absorbs one-off warm-up).
    for _ in range(2):
        res = {k: measure(k, a.device, a.patch, a.batch, a.iters) for k in ("stock", "uniseg")}
    res["ratio_iter_time"] = res["uniseg"]["median_iter_s"] / res["stock"]["median_iter_s"]
    if a.device == "cuda":
        res["ratio_peak_mem"] = res["uniseg"]["peak_mem_gib"] / res["stock"]["peak_mem_gib"]
        res["gpu"] = torch.cuda.get_device_name()
    res.update(device=a.device, patch=a.patch, batch=a.batch, torch=torch.__version__)
    print(json.dumps(res, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
