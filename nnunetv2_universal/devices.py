"""`-device cuda` (nnU-Net's default) on a machine without CUDA: go on on the CPU with a notice instead of failing
in the first `.to(device)`; shared by training and every prediction command."""
from __future__ import annotations

import sys
from typing import Union

import torch


def usable_device(device: Union[str, torch.device], activity: str) -> torch.device:
    """`device`, or the CPU (with a notice on stderr naming `activity`) when CUDA is asked for but absent."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"No CUDA device available: {activity} on the CPU (pass -device cpu to silence this notice).",
              file=sys.stderr)
        return torch.device("cpu")
    return device


def cpu_has_native_bf16() -> bool:
    """bfloat16 in hardware (AVX512-BF16 or AMX). Without it torch emulates bf16 and a small network's tile takes
    several times longer than in fp32 (measured: 8x on this repository's AVX2 machine)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
