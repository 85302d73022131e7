"""`nnUNetv2_universal_evaluate_all_tasks`: nnU-Net's evaluator, per task, on an `--all-tasks` output folder.

    nnUNetv2_universal_evaluate_all_tasks -pred ALL_TASKS_OUT -ref LIVER_LABELS --task SynthLiverCT [-np 1]

The merged label maps use global labels (`labels.json` in that folder, written by --all-tasks). For the task, each
prediction is split back to task-local labels (the task's global values -> its local values, everything else ->
background) into `ALL_TASKS_OUT/<task>/`, and nnU-Net's `compute_metrics_on_folder` compares it with the task's
reference labels (`-ref`, task-local, e.g. the member's labelsTs) on the cases both folders hold; the summary is
`ALL_TASKS_OUT/<task>/summary.json`. Where another task won a voxel (priority), this task's label is lost there: the
Dice measures the merged map as delivered.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join, load_json, maybe_mkdir_p
import nnunetv2.evaluation.evaluate_predictions as nnunet_evaluation
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.inference.input_checks import PredictionInputError
from nnunetv2_universal.worker_pools import pools_in_process


def task_local_values(labels: Dict[str, int], task: str) -> Dict[int, int]:
    """{global value: local value} of one task from labels.json ("Task:label" -> global value), local values in
    the order of the global ones (the task's own label order)."""
    values = sorted(v for k, v in labels.items() if k.split(":", 1)[0] == task and ":" in k)
    if not values:
        tasks = sorted({k.split(":", 1)[0] for k in labels if ":" in k})
        raise PredictionInputError(f"task {task!r} is not in labels.json; its tasks: {', '.join(tasks)}")
    return {g: i + 1 for i, g in enumerate(values)}


def evaluate_task(prediction_folder: str, reference_folder: str, task: str, file_ending: str = ".nii.gz",
                  num_processes: int = 1) -> dict:
    labels_file = join(prediction_folder, "labels.json")
    if not os.path.isfile(labels_file):
        raise PredictionInputError(f"{labels_file} not found: -pred must be an --all-tasks output folder")
    if not os.path.isdir(reference_folder):
        raise PredictionInputError(f"reference folder {reference_folder} does not exist")
    mapping = task_local_values(load_json(labels_file), task)
    cases = sorted(f for f in os.listdir(prediction_folder) if f.endswith(file_ending)
                   and os.path.isfile(join(reference_folder, f)))
    if not cases:
        raise PredictionInputError(f"no case is both in {prediction_folder} and in {reference_folder}")
    out = join(prediction_folder, task)
    maybe_mkdir_p(out)
    io = SimpleITKIO()
    lookup = np.zeros(max(max(mapping), 1) + 1, dtype=np.uint8)
    for g, local in mapping.items():
        lookup[g] = local
    for case in cases:
        seg, properties = io.read_seg(join(prediction_folder, case))
        seg = seg[0].astype(np.int64)
        local = np.where(seg < len(lookup), lookup[np.clip(seg, 0, len(lookup) - 1)], 0).astype(np.uint8)
        io.write_seg(local, join(out, case), properties)
    with pools_in_process(num_processes, nnunet_evaluation):
        return compute_metrics_on_folder(reference_folder, out, join(out, "summary.json"), SimpleITKIO(), file_ending,
                                         sorted(mapping.values()), None, chill=True, num_processes=num_processes)


@console_command
def main(argv=None) -> None:
    p = command_parser(description="Evaluate one task of an --all-tasks output with nnU-Net's evaluator.")
    p.add_argument("-pred", required=True, help="the --all-tasks output folder (with labels.json)")
    p.add_argument("-ref", required=True, help="the task's reference labels (task-local, e.g. a labelsTs folder)")
    p.add_argument("--task", required=True, help="task name (as in labels.json)")
    p.add_argument("-np", type=int, default=int(os.environ.get("nnUNet_def_n_proc", 1)),
                   help="worker processes for the metrics (nnUNet_def_n_proc, else 1)")
    p.add_argument("--file_ending", default=".nii.gz", help="file ending of predictions and references")
    args = p.parse_args(argv)
    metrics = evaluate_task(args.pred, args.ref, args.task, args.file_ending, args.np)
    dice = {k: round(v["Dice"], 4) for k, v in metrics["mean"].items()}
    print(f"{args.task}: mean Dice per local label {dice}; foreground mean {metrics['foreground_mean']['Dice']:.4f}; "
          f"summary: {join(args.pred, args.task, 'summary.json')}")


if __name__ == "__main__":
    main()
