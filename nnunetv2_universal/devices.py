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
