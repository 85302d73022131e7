"""`nnUNetv2_universal_demo`: the whole universal workflow on a synthetic 4-task collection, on CPU.

Generates 4 member datasets (two 1-channel CT tasks, 2-channel PET/CT, 4-channel brain MR), builds the collection, plans
and preprocesses it, trains the task-head trainer (UniSegTrainerTaskHeads_cpuDemo), predicts the held-out cases per task and with --all-tasks,
evaluates with nnU-Net's evaluator, prints a Dice table and writes demo_results.png. Every step runs the real
console command (printed before it runs) in a workspace folder whose nnUNet_raw/_preprocessed/_results it sets.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from nnunetv2_universal.cli import TRAINER_FOLDER, command_parser
from nnunetv2_universal.demo.held_out import mask_dice

COLLECTION_ID = 900
FIRST_MEMBER_ID = 501
# MultiTalent's per-task sigmoid heads on UniSeg's backbone: what the real-CT benchmark supports
# (docs/explanation/learning-the-condition.md#real-anatomy-benchmark)
TRAINER = "UniSegTrainerTaskHeads_cpuDemo"
PAPER_TRAINER = "UniSegTrainer_cpuDemo"


def demo_trainer_class(name: str = TRAINER):
    """The trainer class nnUNetv2_train finds for `name` in the plugin's trainer folder."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    cls = recursive_find_python_class(TRAINER_FOLDER, name, "nnunetv2_universal.nnunet_trainers")
    if cls is None:
        raise KeyError(f"no trainer {name} in {TRAINER_FOLDER}")
    return cls
PLANS = "UniSegPlansCPUDemo"


def _run(cmd: List[str], env: dict, log_file: str) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    with open(log_file, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                encoding="utf-8", errors="replace")
        for line in proc.stdout:
            log.write(line)
            # Show progress without nnU-Net's trainer-search chatter.
            if any(k in line for k in ("Epoch ", "Pseudo dice per task", "train_loss", "Validation Dice", "Mean ",
                                       "Collection written", "Plans written", "Preprocessed data",
                                       "Global labels", "Error", "error")):
                print("   " + line.rstrip(), flush=True)
        if proc.wait() != 0:
            raise DemoStepFailed(f"{os.path.basename(cmd[0])} exited with status {proc.returncode}; its output is in "
                                 f"{log_file}. Command: {' '.join(cmd)}")
    print(f"   done in {time.time() - start:.0f} s", flush=True)


def _evaluate(gt_folder: str, pred_folder: str, labels: Dict[str, int], file_ending: str) -> Dict[str, float]:
    """Mean Dice per class over the cases, with nnU-Net's per-case evaluator."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    cases = sorted(f for f in os.listdir(gt_folder) if f.endswith(file_ending))
    per_class = {name: [] for name, v in labels.items() if v != 0}
    for case in cases:
        result = compute_metrics(os.path.join(gt_folder, case), os.path.join(pred_folder, case), SimpleITKIO(),
                                 [v for v in labels.values() if v != 0])
        for name, v in labels.items():
            if v != 0:
                per_class[name].append(result["metrics"][v]["Dice"])
    return {name: float(np.nanmean(values)) for name, values in per_class.items()}


def _read(path: str) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def _cross_activation(task, pred_folder: str, structures_folder: str) -> Optional[float]:
    """Mean over held-out cases of the largest fraction of another task's structure this task labels."""
    from nnunetv2_universal.demo.synthetic import cross_activation
    values = []
    for case in sorted(os.listdir(structures_folder)):
        found = cross_activation(task, _read(os.path.join(pred_folder, case)),
                                 _read(os.path.join(structures_folder, case)))
        if found:
            values.append(max(found.values()))
    return float(np.mean(values)) if values else None


def _figure(tasks, raw: str, pred_root: str, global_labels: Dict[str, int], out_png: str) -> None:
    """One row per task (first held-out case, slice with most structure): image, every structure the image
    shows, the task's labels, --task and --all-tasks output."""
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(tasks), 5, figsize=(16, 3.3 * len(tasks)))
    top = max(global_labels.values())
    for row, (task, member) in enumerate(tasks):
        case = sorted(f for f in os.listdir(os.path.join(raw, member, "labelsTs")))[0][:-len(".nii.gz")]
        image = _read(os.path.join(raw, member, "imagesTs", f"{case}_0000.nii.gz"))
        structures = _read(os.path.join(raw, member, "structuresTs", f"{case}.nii.gz"))
        gt = _read(os.path.join(raw, member, "labelsTs", f"{case}.nii.gz"))
        pred = _read(os.path.join(pred_root, task.name, f"{case}.nii.gz"))
        merged = _read(os.path.join(pred_root, "all_tasks", f"{case}.nii.gz"))
        z = int(np.argmax((structures > 0).sum((1, 2))))
        vmax = max(int(gt.max()), 1)
        panels = [(image[z], "gray", None, f"{task.name}: image (channel 0)"),
                  (structures[z], "Set2", max(task.structures.values()), "what the image shows"),
                  (gt[z], "viridis", vmax, "this task's labels"), (pred[z], "viridis", vmax, "--task"),
                  (merged[z], "tab10", max(top, 9), "--all-tasks (global labels)")]
        for ax, (arr, cmap, vtop, title) in zip(axes[row], panels):
            ax.imshow(arr, cmap=cmap, vmin=0 if vtop else None, vmax=vtop, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


class DemoStepFailed(RuntimeError):
    """A step of the demo failed; the message says which and where to look."""


def main(argv=None) -> int:
    """Console entry point: 0 when every step ran, 1 (with the reason on stderr) when one failed."""
    try:
        run_demo(argv)
    except DemoStepFailed as e:
        print(f"\nDemo failed: {e}", file=sys.stderr)
        return 1
    return 0


def run_demo(argv=None) -> dict:
    parser = command_parser(description="Run the universal segmentation demo on synthetic data (CPU).", traceback=False)
    parser.add_argument("-o", default="demo_output", help="workspace folder (default ./demo_output; replaced)")
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="device for training and prediction")
    parser.add_argument("--num_train", type=int, default=8, help="training cases per task")
    parser.add_argument("-tr", default=TRAINER, help=f"trainer (default {TRAINER})")
    args = parser.parse_args(argv)
    start = time.time()
    work = os.path.abspath(args.o)
    if os.path.isdir(work):
        shutil.rmtree(work)
    raw, pre, res = (os.path.join(work, d) for d in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
    for d in (raw, pre, res):
        os.makedirs(d)
    env = dict(os.environ, nnUNet_raw=raw, nnUNet_preprocessed=pre, nnUNet_results=res,
               nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"))
    env["nnUNet_extTrainer"] = os.pathsep.join(p for p in (os.environ.get("nnUNet_extTrainer"), TRAINER_FOLDER) if p)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    log = os.path.join(work, "demo.log")
    bindir = os.path.dirname(sys.executable)

    def script(name):
        return os.path.join(bindir, name)

    print(f"[1/6] synthetic data -> {raw}", flush=True)
    from nnunetv2_universal.demo.synthetic import SYNTHETIC_TASKS, make_synthetic_datasets
    members = make_synthetic_datasets(raw, FIRST_MEMBER_ID, num_train=args.num_train, num_test=2)
    tasks = list(zip(SYNTHETIC_TASKS, members))
    print("[2/6] build the collection", flush=True)
    _run([script("nnUNetv2_universal_build_collection"), "-d", *[str(FIRST_MEMBER_ID + i) for i in range(len(members))],
          "-o", str(COLLECTION_ID), "-n", "SynthUniversal"], env, log)
    print("[3/6] plan and preprocess (each task keeps its spacing and normalisation)", flush=True)
    _run([script("nnUNetv2_universal_plan_and_preprocess"), "-d", str(COLLECTION_ID), "-pl", "cpu_demo", "-np", "1",
          "--no_pbar"], env, log)
    print(f"[4/6] train {args.tr} (stock nnUNetv2_train)", flush=True)
    _run([script("nnUNetv2_train"), str(COLLECTION_ID), "3d_fullres", "0", "-tr", args.tr, "-p", PLANS,
          "-device", args.device], dict(env, nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0")), log)
    print("[5/6] predict held-out cases: --task per task, then --all-tasks", flush=True)
    pred_root = os.path.join(work, "predictions")
    all_inputs = os.path.join(work, "all_test_images")
    os.makedirs(all_inputs)
    common = ["-d", str(COLLECTION_ID), "-tr", args.tr, "-p", PLANS, "-c", "3d_fullres", "-f", "0",
              "-device", args.device, "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    for task, member in tasks:
        images = os.path.join(raw, member, "imagesTs")
        for f in os.listdir(images):
            shutil.copy(os.path.join(images, f), all_inputs)
        _run([script("nnUNetv2_universal_predict"), "-i", images, "-o", os.path.join(pred_root, task.name),
              "--task", task.name, *common], env, log)
    _run([script("nnUNetv2_universal_predict"), "-i", all_inputs, "-o", os.path.join(pred_root, "all_tasks"),
          "--all-tasks", *common], env, log)
    print("[6/6] evaluate (nnU-Net's evaluator) and draw", flush=True)
    global_labels = json.load(open(os.path.join(pred_root, "all_tasks", "labels.json")))
    table = {}
    for task, member in tasks:
        gt = os.path.join(raw, member, "labelsTs")
        dice = _evaluate(gt, os.path.join(pred_root, task.name), task.labels, ".nii.gz")
        # --all-tasks output in global labels: map back to this task's labels for the same evaluation
        merged = _evaluate_merged(gt, os.path.join(pred_root, "all_tasks"), task.name, task.labels, global_labels)
        table[task.name] = {"per_class": dice, "mean": float(np.mean(list(dice.values()))),
                            "all_tasks_mean": float(np.mean(list(merged.values()))),
                            "cross_activation": _cross_activation(task, os.path.join(pred_root, task.name),
                                                                  os.path.join(raw, member, "structuresTs"))}
    mean = float(np.mean([v["mean"] for v in table.values()]))
    results = {"trainer": args.tr, "tasks": table, "mean_dice": mean}
    with open(os.path.join(work, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    _figure(tasks, raw, pred_root, global_labels, os.path.join(work, "demo_results.png"))
    _print_table(args.tr, table, mean)
    print(f"\nFigure: {os.path.join(work, 'demo_results.png')}\nTotal time: {time.time() - start:.0f} s")
    return results


def _print_table(trainer: str, table: dict, mean: float) -> None:
    fmt = lambda v: "     -" if v is None else f"{v:6.3f}"  # noqa: E731
    paper = _paper_network_numbers() if trainer != PAPER_TRAINER else None
    print(f"\nHeld-out Dice (2 cases per task), {trainer}" + (f"; beside it, UniSeg's paper network on the "
                                                              f"same schedule ({PAPER_TRAINER})" if paper else ""))
    extra = f"   | {'--task':>6s}   {'--all':>6s}   {'cross':>6s}  (paper network)" if paper else ""
    print(f"{'task':14s} {'--task':>6s}   {'--all':>6s}   {'cross':>6s}{extra}   per class (--task)")
    for name, row in table.items():
        beside = ""
        if paper and name in paper["tasks"]:
            p = paper["tasks"][name]
            beside = f"   | {fmt(p['task_dice'])}   {fmt(p['all_tasks_dice'])}   {fmt(p['cross_activation'])}" + \
                " " * 16
        print(f"{name:14s} {row['mean']:6.3f}   {row['all_tasks_mean']:6.3f}   {fmt(row['cross_activation'])}"
              f"{beside}   " + "  ".join(f"{k}={v:.3f}" for k, v in row["per_class"].items()))
    print(f"{'mean':14s} {mean:6.3f}")
    print("cross: the largest fraction of another task's structure that the task labels (both CT tasks see liver, "
          "lesion and kidneys in every image; each labels only its own)")
    if paper:
        what = TRAINER_DESCRIPTIONS.get(trainer, "")
        print(f"The demo trains {trainer}{': ' + what if what else ''}. UniSeg's paper network does not learn its "
              f"task condition reliably within this budget; its numbers are the median of {len(paper['seeds'])} "
              f"seeds measured with `{paper['command']}` (docs/explanation/learning-the-condition.md).")


TRAINER_DESCRIPTIONS = {
    "UniSegTrainerTaskHeads_cpuDemo": "UniSeg's backbone with MultiTalent's per-task sigmoid heads (no prompt: each "
                                      "task reads its own output channels and trains only them), the trainer the "
                                      "real-CT benchmark supports",
    "UniSegTrainerDecoderFiLM_cpuDemo": "UniSeg plus a per-task FiLM in every decoder stage, beyond the paper",
}


def _paper_network_numbers() -> Optional[dict]:
    """UniSeg's paper network on the demo's collection and schedule, as measured by benchmarks/conditioning.py."""
    path = os.path.join(os.path.dirname(__file__), "paper_network_numbers.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _evaluate_merged(gt_folder: str, merged_folder: str, task: str, labels: Dict[str, int],
                     global_labels: Dict[str, int]) -> Dict[str, float]:
    """Dice of the --all-tasks output for one task: global label values mapped back to task-local ones."""
    import SimpleITK as sitk
    scores = {name: [] for name, v in labels.items() if v != 0}
    for case in sorted(f for f in os.listdir(gt_folder) if f.endswith(".nii.gz")):
        gt = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(gt_folder, case)))
        merged = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(merged_folder, case)))
        for name, v in labels.items():
            if v == 0:
                continue
            scores[name].append(mask_dice(merged == global_labels[f"{task}:{name}"], gt == v))
    return {k: float(np.mean(v)) for k, v in scores.items()}


if __name__ == "__main__":
    sys.exit(main())
