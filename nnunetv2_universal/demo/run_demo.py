"""`nnUNetv2_universal_demo`: the whole universal workflow on a synthetic 4-task collection, on CPU.

Generates 4 member datasets (two 1-channel CT tasks, 2-channel PET/CT, 4-channel brain MR), builds the collection, plans
and preprocesses it, trains UniSegTrainer_cpuDemo, predicts the held-out cases per task and with --all-tasks,
evaluates with nnU-Net's evaluator, prints a Dice table and writes demo_results.png. Every step runs the real
console command (printed before it runs) in a workspace folder whose nnUNet_raw/_preprocessed/_results it sets.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

from nnunetv2_universal.cli import TRAINER_FOLDER

COLLECTION_ID = 900
FIRST_MEMBER_ID = 501
TRAINER = "UniSegTrainer_cpuDemo"
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
            raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log_file}")
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


def _figure(tasks, raw: str, pred_root: str, out_png: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    fig, axes = plt.subplots(len(tasks), 4, figsize=(13, 3.3 * len(tasks)))
    for row, (task, member) in enumerate(tasks):
        case = sorted(f for f in os.listdir(os.path.join(raw, member, "labelsTs")))[0][:-len(".nii.gz")]
        image = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(raw, member, "imagesTs", f"{case}_0000.nii.gz")))
        gt = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(raw, member, "labelsTs", f"{case}.nii.gz")))
        pred = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred_root, task, f"{case}.nii.gz")))
        merged = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred_root, "all_tasks", f"{case}.nii.gz")))
        z = int(np.argmax((gt > 0).sum((1, 2))))
        vmax = max(int(gt.max()), 1)
        panels = [(image[z], "gray", None, f"{task}: image (channel 0)"), (gt[z], "viridis", vmax, "ground truth"),
                  (pred[z], "viridis", vmax, "prediction --task"), (merged[z], "tab10", 9, "--all-tasks (global)")]
        for ax, (arr, cmap, top, title) in zip(axes[row], panels):
            ax.imshow(arr, cmap=cmap, vmin=0 if top else None, vmax=top, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the universal segmentation demo on synthetic data (CPU).")
    parser.add_argument("-o", default="demo_output", help="workspace folder (default ./demo_output; replaced)")
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--num_train", type=int, default=8, help="training cases per task")
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
    tasks = [(t.name, m) for t, m in zip(SYNTHETIC_TASKS, members)]
    print("[2/6] build the collection", flush=True)
    _run([script("nnUNetv2_universal_build_collection"), "-d", *[str(FIRST_MEMBER_ID + i) for i in range(len(members))],
          "-o", str(COLLECTION_ID), "-n", "SynthUniversal"], env, log)
    print("[3/6] plan and preprocess (each task keeps its spacing and normalisation)", flush=True)
    _run([script("nnUNetv2_universal_plan_and_preprocess"), "-d", str(COLLECTION_ID), "-pl", "cpu_demo", "-np", "1",
          "--no_pbar"], env, log)
    print(f"[4/6] train {TRAINER} (stock nnUNetv2_train)", flush=True)
    _run([script("nnUNetv2_train"), str(COLLECTION_ID), "3d_fullres", "0", "-tr", TRAINER, "-p", PLANS,
          "-device", args.device], dict(env, nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0")), log)
    print("[5/6] predict held-out cases: --task per task, then --all-tasks", flush=True)
    pred_root = os.path.join(work, "predictions")
    all_inputs = os.path.join(work, "all_test_images")
    os.makedirs(all_inputs)
    common = ["-d", str(COLLECTION_ID), "-tr", TRAINER, "-p", PLANS, "-c", "3d_fullres", "-f", "0",
              "-device", args.device, "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    for task, member in tasks:
        images = os.path.join(raw, member, "imagesTs")
        for f in os.listdir(images):
            shutil.copy(os.path.join(images, f), all_inputs)
        _run([script("nnUNetv2_universal_predict"), "-i", images, "-o", os.path.join(pred_root, task),
              "--task", task, *common], env, log)
    _run([script("nnUNetv2_universal_predict"), "-i", all_inputs, "-o", os.path.join(pred_root, "all_tasks"),
          "--all-tasks", *common], env, log)
    print("[6/6] evaluate (nnU-Net's evaluator) and draw", flush=True)
    global_labels = json.load(open(os.path.join(pred_root, "all_tasks", "labels.json")))
    table, rows = {}, []
    for task, member in tasks:
        spec = json.load(open(os.path.join(raw, member, "dataset.json")))["universal_task"]
        gt = os.path.join(raw, member, "labelsTs")
        dice = _evaluate(gt, os.path.join(pred_root, task), spec["labels"], ".nii.gz")
        # --all-tasks output in global labels: map back to this task's labels for the same evaluation
        merged_eval = _evaluate_merged(gt, os.path.join(pred_root, "all_tasks"), task, spec["labels"], global_labels)
        table[task] = {"per_class": dice, "mean": float(np.mean(list(dice.values()))),
                       "all_tasks_mean": float(np.mean(list(merged_eval.values())))}
        rows.append(f"{task:14s} {table[task]['mean']:6.3f}   {table[task]['all_tasks_mean']:6.3f}   "
                    + "  ".join(f"{k}={v:.3f}" for k, v in dice.items()))
    mean = float(np.mean([v["mean"] for v in table.values()]))
    table["mean_dice"] = mean
    with open(os.path.join(work, "demo_results.json"), "w") as f:
        json.dump(table, f, indent=2)
    _figure(tasks, raw, pred_root, os.path.join(work, "demo_results.png"))
    print("\nHeld-out Dice (2 cases per task)")
    print(f"{'task':14s} {'--task':>6s}   {'--all':>6s}   per class (--task)")
    print("\n".join(rows))
    print(f"{'mean':14s} {mean:6.3f}")
    print(f"\nFigure: {os.path.join(work, 'demo_results.png')}\nTotal time: {time.time() - start:.0f} s")
    return table


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
            p, g = merged == global_labels[f"{task}:{name}"], gt == v
            denom = p.sum() + g.sum()
            scores[name].append(1.0 if denom == 0 else 2.0 * (p & g).sum() / denom)
    return {k: float(np.mean(v)) for k, v in scores.items()}


if __name__ == "__main__":
    main()
