"""nnUNetv2_universal_m4oe_add_modality: grow a trained M4oE model by one modality expert and new dataset heads.

Every MoE layer gets one more expert, initialised as a copy of an existing one (`--copy_expert`, e.g. the CT
expert for PET), with its gate row copied, and `--new_tasks` dataset heads are appended (zero-initialised, or copies
of `--head_from`). Everything else is kept. The output is a checkpoint that stock `nnUNetv2_train ...
-pretrained_weights OUT` loads into a network with one more expert and the new tasks (collection members in the
old order first, new ones last). See docs/how-to/m4oe-recipe.md.
"""
from __future__ import annotations


import torch

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.finetuning.weights import load_checkpoint_safely
from nnunetv2_universal.networks.m4oe import expand_for_new_modality


def add_modality(checkpoint: str, output_file: str, copy_expert: int, new_tasks: int = 1, head_from=None) -> dict:
    saved = load_checkpoint_safely(checkpoint)
    weights = saved["network_weights"] if "network_weights" in saved else saved
    expanded = expand_for_new_modality(weights, copy_expert, new_tasks, head_from)
    torch.save({"network_weights": expanded, "init_args": saved.get("init_args"),
                "trainer_name": saved.get("trainer_name")}, output_file)
    return expanded


@console_command
def main(argv=None):
    parser = command_parser(description="Add one modality expert (and dataset heads) to a trained M4oE "
                                        "checkpoint; train on with -pretrained_weights.")
    parser.add_argument("-i", required=True, help="trained M4oE checkpoint (checkpoint_final.pth)")
    parser.add_argument("-o", required=True, help="output checkpoint")
    parser.add_argument("--copy_expert", type=int, required=True, help="index of the expert the new one starts from")
    parser.add_argument("--new_tasks", type=int, default=1, help="dataset heads to append (default 1)")
    parser.add_argument("--head_from", type=int, default=None, help="initialise new heads from this head (default: "
                                                                     "zeros)")
    args = parser.parse_args(argv)
    add_modality(args.i, args.o, args.copy_expert, args.new_tasks, args.head_from)
    print(f"wrote {args.o}")


if __name__ == "__main__":
    main()
