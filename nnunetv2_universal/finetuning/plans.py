"""Downstream plans for fine-tuning an upstream UniSeg model (`nnUNetv2_universal_transfer_plans`).

The target dataset keeps nnU-Net's own planning for what concerns its images (stock spacing, normalisation and
preprocessed data: run `nnUNetv2_plan_and_preprocess -d TARGET -c 3d_fullres` first, as the paper used stock
planning downstream). The new plans reuse that configuration and its preprocessed data and change only the network:
the upstream architecture without prompt and FUSE (UniSegBackbone, same stems plus one for the target's channel
count if needed), a patch that fits it (paper: 48x192x192) and the upstream batch size.
"""
from __future__ import annotations

import copy
import os
from typing import Optional, Sequence

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.networks.uniseg import prompt_spatial_size

BACKBONE_NETWORK = "nnunetv2_universal.networks.uniseg.UniSegBackbone"
UPSTREAM_ONLY_KWARGS = ("num_tasks", "patch_size", "fuse_reduction")
PAPER_DOWNSTREAM_PATCH = (48, 192, 192)


def transfer_plans(source: str, target: str, source_plans: str = "UniSegPlans", base_plans: str = "nnUNetPlans",
                   target_plans: str = "UniSegFinetunePlans", configuration: str = "3d_fullres",
                   patch_size: Optional[Sequence[int]] = PAPER_DOWNSTREAM_PATCH) -> dict:
    tgt_name = maybe_convert_to_dataset_name(target)
    if os.path.isdir(source):  # a model folder (e.g. the imported released model): its plans.json
        src_name, upstream_file = source, join(source, "plans.json")
    else:
        src_name = maybe_convert_to_dataset_name(source)
        upstream_file = join(nnUNet_preprocessed, src_name, f"{source_plans}.json")
    base_file = join(nnUNet_preprocessed, tgt_name, f"{base_plans}.json")
    for f, hint in ((upstream_file, "the upstream collection's plans"),
                    (base_file, f"run nnUNetv2_plan_and_preprocess -d {target} -c {configuration} first")):
        if not isfile(f):
            raise FileNotFoundError(f"{f} not found ({hint})")
    upstream_cfg = load_json(upstream_file)["configurations"][configuration]
    arch = upstream_cfg["architecture"]
    if not arch["network_class_name"].endswith(".UniSegNetwork"):
        raise ValueError(f"{upstream_file} does not describe a UniSeg network")
    plans = load_json(base_file)
    dataset_json = load_json(join(nnUNet_preprocessed, tgt_name, "dataset.json"))
    channels = len(dataset_json["channel_names"])
    kwargs = {k: copy.deepcopy(v) for k, v in arch["arch_kwargs"].items() if k not in UPSTREAM_ONLY_KWARGS}
    kwargs["stem_channels"] = sorted(set(kwargs.get("stem_channels") or []) | {channels})
    patch = list(patch_size) if patch_size is not None else list(upstream_cfg["patch_size"])
    prompt_spatial_size(patch, kwargs["strides"])  # raises if the patch does not fit the pooling
    cfg = plans["configurations"][configuration]
    cfg.update({"patch_size": patch, "batch_size": upstream_cfg["batch_size"],
                "batch_dice": cfg.get("batch_dice", False),
                "architecture": {"network_class_name": BACKBONE_NETWORK, "arch_kwargs": kwargs,
                                 "_kw_requires_import": list(arch["_kw_requires_import"])}})
    plans["plans_name"] = target_plans
    plans["universal_upstream"] = {"dataset": src_name, "plans": source_plans}
    save_json(plans, join(nnUNet_preprocessed, tgt_name, f"{target_plans}.json"), sort_keys=False)
    return plans


@console_command
def main(argv=None):
    p = command_parser(description="Write fine-tuning plans for TARGET from an upstream UniSeg collection.")
    p.add_argument("-s", required=True, help="upstream collection dataset id or name, or a model folder with "
                                             "plans.json (e.g. from nnUNetv2_universal_import_uniseg_v1)")
    p.add_argument("-t", required=True, help="target dataset id or name (planned with stock nnU-Net first)")
    p.add_argument("-sp", default="UniSegPlans", help="upstream plans (default UniSegPlans)")
    p.add_argument("-bp", default="nnUNetPlans", help="target's stock plans to start from (default nnUNetPlans)")
    p.add_argument("-tp", default="UniSegFinetunePlans", help="name of the new plans (default UniSegFinetunePlans)")
    p.add_argument("-c", default="3d_fullres", help="configuration")
    p.add_argument("-patch", nargs="+", type=int, default=list(PAPER_DOWNSTREAM_PATCH),
                   help="patch size (default 48 192 192, the paper's)")
    args = p.parse_args(argv)
    plans = transfer_plans(args.s, args.t, args.sp, args.bp, args.tp, args.c, args.patch)
    cfg = plans["configurations"][args.c]
    print(f"Wrote {args.tp}.json for {plans['dataset_name']}: patch {cfg['patch_size']}, stems "
          f"{cfg['architecture']['arch_kwargs']['stem_channels']}, data {cfg['data_identifier']} (reused)")


if __name__ == "__main__":
    main()
