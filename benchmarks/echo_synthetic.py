"""The echo model with its paper defaults on a synthetic four-dataset echo collection (CPU), text vs one-hot codes.

    python benchmarks/echo_synthetic.py [--trainers EchoPromptTrainer_cpuBench EchoPromptTrainerOneHot_cpuBench
        EchoPromptTrainerRawText_cpuBench] [--seeds 0 1 2] [--workdir DIR] [--out benchmarks/echo_synthetic_cpu.json]

Data (tests/echo_synthetic.py): CAMUS-like A2C and A4C clips with both classes, EchoNet-Dynamic-like A4C and
EchoNet-Pediatric-like PSAX clips with LV_endo only; 8 training, 3 validation and 4 test clips each, 16 x 32 x 32;
the tiny random-init SAM (53,728 parameters) and BERT of the tests; the tests' 3-stage template. Built, planned and
preprocessed once with the console scripts. Each (trainer, seed) trains in its own process (nnU-Net's
run_training, seeded) with the `_cpuBench` schedule: the trainer's defaults (one-pass epochs: 88 clips at batch 2
= 44 iterations, paper losses and augmentation) but 20 epochs and MADGRAD lr 1e-3. The 16 test clips are
predicted with `nnUNetv2_universal_predict_echo` (no view id) and scored with `nnUNetv2_universal_evaluate_echo`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION = "670"
PLANS = "EchoPlansTest"
MEMBERS = [  # id, name, case prefix, dataset, view, LV_endo only
    (671, "SynthCAMUS2", "CAMUS_a", "CAMUS", "A2C", False),
    (672, "SynthCAMUS4", "CAMUS_b", "CAMUS", "A4C", False),
    (673, "SynthDynamic", "DYN_c", "EchoNetDynamic", "A4C", True),
    (674, "SynthPeds", "PED_d", "EchoNetPediatric", "PSAX", True),
]


def prepare(root: str, collection: str = COLLECTION, name: str = "SynthEchoBench", members=MEMBERS,
            clips_per_member: int = 8) -> dict:
    """Write, build, plan and preprocess the synthetic members (once per workdir); returns the environment."""
    env = dict(os.environ, nnUNet_raw=os.path.join(root, "raw"), nnUNet_preprocessed=os.path.join(root, "pre"),
               nnUNet_results=os.path.join(root, "results"), nnUNet_def_n_proc="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[key], exist_ok=True)
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from echo_synthetic import echo_test_template, tiny_bert_folder, tiny_sam_checkpoint, write_synthetic_echo_dataset
    env.update(nnUNet_universal_sam_checkpoint=os.path.join(root, "sam_tiny.pth"),
               nnUNet_universal_clinicalbert=os.path.join(root, "tiny_bert"))
    folder = subprocess.run([os.path.join(BIN, "nnUNetv2_universal_trainer_folder")], env=env, check=True,
                            capture_output=True, text=True, encoding="utf-8").stdout.strip()
    env["nnUNet_extTrainer"] = os.pathsep.join(p for p in (os.environ.get("nnUNet_extTrainer"), folder) if p)
    if os.path.isdir(os.path.join(env["nnUNet_preprocessed"], f"Dataset{collection}_{name}")):
        return env
    tiny_sam_checkpoint(root)
    tiny_bert_folder(root)
    for i, (dataset_id, member, prefix, dataset, view, endo_only) in enumerate(members):
        write_synthetic_echo_dataset(env["nnUNet_raw"], dataset_id, member, prefix, dataset, view, clips_per_member, 3,
                                     4, endo_only, seed=10 + i)
    template = echo_test_template(root)
    for cmd in (["nnUNetv2_universal_build_echo_collection", "-d", *[str(m[0]) for m in members], "-o", collection,
                 "-n", name],
                ["nnUNetv2_universal_plan_echo", "-d", collection, "-pl", template, "-np", "1"]):
        subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], env=env, check=True, stdout=subprocess.DEVNULL)
    return env


TRAIN = """
import random, sys, numpy as np, torch
seed = int(sys.argv[2])
random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
torch.set_num_threads(1)
from nnunetv2.run.run_training import run_training
run_training("{collection}", "3d_fullres", 0, sys.argv[1], "{plans}", device=torch.device("cpu"))
"""


def run_one(env: dict, root: str, trainer: str, seed: int) -> dict:
    results = os.path.join(root, f"results_{trainer}_{seed}")
    run_env = dict(env, nnUNet_results=results, nnUNet_n_proc_DA="0")  # training only (preprocessing needs >= 1)
    start = time.time()
    subprocess.run([sys.executable, "-c", TRAIN.format(collection=COLLECTION, plans=PLANS), trainer, str(seed)],
                   env=run_env, check=True, stdout=subprocess.DEVNULL)
    trained = time.time() - start
    raw = os.path.join(env["nnUNet_raw"], f"Dataset{COLLECTION}_SynthEchoBench")
    out = os.path.join(root, f"pred_{trainer}_{seed}")
    subprocess.run([os.path.join(BIN, "nnUNetv2_universal_predict_echo"), "-i", os.path.join(raw, "imagesTs"),
                    "-o", out, "-d", COLLECTION, "-tr", trainer, "-p", PLANS, "-f", "0", "-device", "cpu"],
                   env=run_env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([os.path.join(BIN, "nnUNetv2_universal_evaluate_echo"), "-d", COLLECTION, "-pred", out],
                   env=run_env, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "summary_echo.json"), encoding="utf-8") as f:
        summary = json.load(f)
    summary["train_seconds"] = round(trained, 1)
    return summary


def median_row(runs: list) -> dict:
    """Median over seeds of every (group, metric) Dice and of the view accuracy."""
    row = {}
    for group in runs[0]["table2"]:
        for metric in runs[0]["table2"][group]:
            row[f"{group} {metric}"] = float(np.median([r["table2"][group][metric]["dice"] for r in runs]))
    row["view_accuracy"] = float(np.median([r.get("view_accuracy", {}).get("accuracy", np.nan) for r in runs]))
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainers", nargs="+", default=[
        "EchoPromptTrainer_cpuBench", "EchoPromptTrainerOneHot_cpuBench", "EchoPromptTrainerRawText_cpuBench"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "echo_synthetic_cpu.json"))
    args = parser.parse_args(argv)
    root = args.workdir or tempfile.mkdtemp(prefix="echo_bench_")
    env = prepare(root)
    report = {"command": "python benchmarks/echo_synthetic.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "runs": {}, "median": {}}
    for trainer in args.trainers:
        runs = []
        for seed in args.seeds:
            runs.append(run_one(env, root, trainer, seed))
            print(trainer, seed, json.dumps(runs[-1]["table2"]), runs[-1].get("view_accuracy"), flush=True)
        report["runs"][trainer] = runs
        report["median"][trainer] = median_row(runs)
        print(trainer, "median", json.dumps(report["median"][trainer], indent=1), flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
