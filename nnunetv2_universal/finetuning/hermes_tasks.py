"""nnUNetv2_universal_hermes_add_tasks: make room for new tasks in a trained Hermes model.

Inserts `--new_tasks` task-prior rows (copies of the null row, a neutral start) before the null row of every
fusion point; everything else is kept. Train on with `-pretrained_weights OUT` on a collection whose new members
come last: `HermesTrainer` fine-tunes everything (transfer), a `HermesTrainerNewTasksOnly` subclass trains only the
new rows (incremental). See docs/how-to/train-hermes.md.
"""
from __future__ import annotations


import torch

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.finetuning.weights import load_checkpoint_safely
from nnunetv2_universal.training.hermes_trainer import new_task_rows


def add_tasks(checkpoint: str, output_file: str, new_tasks: int) -> dict:
    saved = load_checkpoint_safely(checkpoint)
    grown = new_task_rows(saved.get("network_weights", saved), new_tasks)
    if not any(k.endswith(".task_table") for k in grown):
        raise ValueError(f"{checkpoint} is not a Hermes checkpoint (no task_table tensors)")
    torch.save({"network_weights": grown}, output_file)
    return grown


@console_command
def main(argv=None):
    parser = command_parser(description="Add task-prior rows to a trained Hermes checkpoint.")
    parser.add_argument("-i", required=True, help="trained Hermes checkpoint")
    parser.add_argument("-o", required=True, help="output checkpoint")
    parser.add_argument("--new_tasks", type=int, required=True, help="number of new global tasks (labels)")
    args = parser.parse_args(argv)
    add_tasks(args.i, args.o, args.new_tasks)
    print(f"wrote {args.o}")


if __name__ == "__main__":
    main()
