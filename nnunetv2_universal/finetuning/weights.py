"""Export an upstream UniSeg checkpoint as downstream backbone weights that stock `-pretrained_weights` loads.

As the paper: the prompt and FUSE are dropped, the upstream segmentation heads are dropped (new heads sized for
the target's classes are trained from scratch; nnU-Net's loader skips `.seg_layers.` keys), and the input channel
of the first transposed convolution that carried the task prompt (the last one) is removed. Input stems: the
stem matching the target's channel count is used as is; a channel count the upstream model has no stem for gets a
new stem initialised from the 1-channel stem, its weights split evenly over the channels (the response to an
image repeated on every channel equals the 1-channel stem's). Tensors are saved on the CPU.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Dict, Optional

import numpy as np
import torch

from nnunetv2_universal.cli import command_parser, console_command

PROMPT_KEYS = ("prompt",)
DROPPED_PREFIXES = ("fuse.", "film.")  # film: the opt-in decoder FiLM (per-task, no use downstream)
FIRST_TRANSPCONV = "decoder.transpconvs.0.weight"
STEM_KEY_PARTS = (".convs.0.conv.conv_", ".convs.0.all_modules.0.conv_")
_NUMPY_SAFE_GLOBALS = [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType,
                       np.dtypes.Int64DType]


def _storage_format(path: str) -> str:
    """'zip' (torch.save since 1.6), 'truncated zip', 'pickle' (older torch.save, nnU-Net v1 .model) or 'other'."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip" if zipfile.is_zipfile(path) else "truncated zip"
    return "pickle" if head[:1] == b"\x80" else "other"


def load_checkpoint_safely(path: str, allow_pickle: bool = False) -> dict:
    """torch.load without executing pickled code (numpy scalars allowed); allow_pickle for trusted old files.
    A file that is no checkpoint, or a damaged one, is said to be so; --allow_pickle is advised only where the
    file is intact and refused solely for the pickled code it holds."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    storage = _storage_format(path)
    if storage == "other":
        raise RuntimeError(f"{path} is not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
    if storage == "truncated zip":
        raise RuntimeError(f"{path} is a damaged or truncated PyTorch checkpoint (its archive has no central "
                           f"directory); copy or download it again")
    try:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not allow_pickle and "weights only load failed" in first.lower() and "unsupported global" in str(e).lower():
            global_name = next((line.split("GLOBAL", 1)[1].split()[0] for line in str(e).splitlines()
                                if "GLOBAL" in line), "code")
            raise RuntimeError(f"{path} holds pickled Python objects ({global_name}) that are only loaded when "
                               f"executing pickled code is allowed; if you trust the file, pass --allow_pickle") from None
        raise RuntimeError(f"{path} is a damaged or truncated PyTorch checkpoint ({first})") from None
    except (EOFError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"{path} is a damaged or truncated PyTorch checkpoint ({first})") from None


def refuse_v2_checkpoint(checkpoint, path: str) -> None:
    """Importers of v1 files: a checkpoint that is already nnU-Net v2 needs no import; say how to use it."""
    if not (isinstance(checkpoint, dict) and "network_weights" in checkpoint):
        return
    trainer = checkpoint.get("trainer_name", "unknown trainer")
    fold_dir = os.path.dirname(os.path.abspath(path))
    model_dir, dataset_dir = os.path.dirname(fold_dir), os.path.dirname(os.path.dirname(fold_dir))
    parts = os.path.basename(model_dir).split("__")
    if os.path.basename(fold_dir).startswith("fold_") and len(parts) == 3:
        how = (f"predict with it: nnUNetv2_universal_predict -d {os.path.basename(dataset_dir)} -tr {parts[0]} "
               f"-p {parts[1]} -c {parts[2]} -f {os.path.basename(fold_dir)[5:]} -chk {os.path.basename(path)} "
               f"--task NAME -i IN -o OUT")
    else:
        how = ("predict from the model folder it was trained in (nnUNetv2_universal_predict -d DATASET -tr TRAINER "
               "-p PLANS -c CONFIGURATION), or fine-tune from it via nnUNetv2_universal_export_backbone")
    raise ValueError(f"{path} is already an nnU-Net v2 checkpoint ({trainer}), not a UniSeg v1 .model file; it "
                     f"needs no import: {how}")


def network_weights_of(checkpoint, path: str) -> dict:
    """The 'network_weights' of an nnU-Net v2 checkpoint, or an error that says what the file is instead."""
    if isinstance(checkpoint, dict) and "network_weights" in checkpoint:
        return checkpoint["network_weights"]
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        raise ValueError(f"{path} is an nnU-Net v1 checkpoint ('state_dict'); convert it first with "
                         f"nnUNetv2_universal_convert_v1_checkpoint (or import the released UniSeg model with "
                         f"nnUNetv2_universal_import_uniseg_v1)")
    keys = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise ValueError(f"{path} is not an nnU-Net v2 checkpoint (no 'network_weights'; found {keys})")


def _stem_channels(state: Dict[str, torch.Tensor]) -> Dict[int, str]:
    """{channel count: key prefix of that stem conv} for the primary (non-alias) stem keys."""
    found = {}
    for key in state:
        if ".convs.0.conv.conv_" in key and key.endswith(".weight"):
            found[int(key.rsplit("conv_", 1)[1].split(".")[0])] = key[:-len(".weight")]
    return found


def add_stem(state: Dict[str, torch.Tensor], channels: int) -> None:
    """Add a stem for `channels` inputs from the 1-channel stem (weights / channels), in place (aliases too)."""
    stems = _stem_channels(state)
    if channels in stems:
        return
    if 1 not in stems:
        raise ValueError(f"cannot derive a {channels}-channel stem: the checkpoint has stems for {sorted(stems)}")
    for part in STEM_KEY_PARTS:
        for key in [k for k in state if f"{part}1." in k]:
            new_key = key.replace(f"{part}1.", f"{part}{channels}.")
            tensor = state[key]
            state[new_key] = tensor.repeat(1, channels, *[1] * (tensor.ndim - 2)) / channels \
                if key.endswith(".weight") else tensor.clone()


def backbone_state_dict(upstream: Dict[str, torch.Tensor], target_channels: Optional[int] = None) -> Dict:
    """The downstream backbone's weights from an upstream UniSegNetwork state dict (CPU tensors)."""
    if FIRST_TRANSPCONV not in upstream or "prompt" not in upstream:
        raise ValueError("not an upstream UniSeg state dict (no 'prompt' / first transposed conv)")
    out = {}
    for key, value in upstream.items():
        if key in PROMPT_KEYS or key.startswith(DROPPED_PREFIXES) or ".seg_layers." in key:
            continue
        value = value.detach().cpu().clone()
        if key == FIRST_TRANSPCONV:
            value = value[:-1]  # the task prompt was concatenated last
        out[key] = value
    if target_channels is not None:
        add_stem(out, target_channels)
    return out


def export_backbone(upstream_checkpoint: str, output_file: str, target_channels: Optional[int] = None,
                    allow_pickle: bool = False) -> Dict:
    checkpoint = load_checkpoint_safely(upstream_checkpoint, allow_pickle)
    weights = backbone_state_dict(network_weights_of(checkpoint, upstream_checkpoint), target_channels)
    torch.save({"network_weights": weights, "source": str(upstream_checkpoint),
                "stem_channels": sorted(_stem_channels(weights))}, output_file)
    return weights


@console_command
def main(argv=None):
    p = command_parser(description="Export an upstream UniSeg checkpoint as backbone weights for "
                                   "nnUNetv2_train ... -pretrained_weights.")
    p.add_argument("-i", required=True, help="upstream checkpoint (e.g. .../fold_0/checkpoint_final.pth)")
    p.add_argument("-o", required=True, help="output file (.pth)")
    p.add_argument("-c", type=int, default=None,
                   help="input channels of the target dataset; adds a stem if the upstream model has none for it")
    p.add_argument("--allow_pickle", action="store_true",
                   help="allow executing pickled code while loading (only for files you trust)")
    args = p.parse_args(argv)
    weights = export_backbone(args.i, args.o, args.c, args.allow_pickle)
    print(f"Backbone weights ({len(weights)} tensors, stems {sorted(_stem_channels(weights))}) written to {args.o}")


if __name__ == "__main__":
    main()
