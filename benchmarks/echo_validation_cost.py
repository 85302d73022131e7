"""Epoch time of the echo model with fold `all` (the paper's command): validation on every clip vs on the fixed
subset of `validation_batches` x batch clips (the default), on a synthetic echo collection (CPU).

    python benchmarks/echo_validation_cost.py [--clips_per_member 60] [--workdir DIR]
        [--out benchmarks/echo_validation_cost_cpu.json]

Data: four synthetic members as benchmarks/echo_synthetic.py (CAMUS-like A2C and A4C, EchoNet-Dynamic-like A4C,
EchoNet-Pediatric-like PSAX; 16 x 32 x 32 clips, the tests' tiny SAM / BERT and 3-stage template, batch 2), with
`--clips_per_member` training clips each, so that fold `all` holds more clips than the subset. Each setting trains
one epoch in its own process (EchoPromptTrainer_cpuBench: one-pass epochs, MADGRAD) and reads nnU-Net's epoch
time; the time per training and per validation iteration then gives the paper's scale (15,800 clips, batch 5).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _load_echo_benchmark():
    """benchmarks/echo_synthetic.py (the synthetic members and their set-up), under a name of its own: the tests'
    data generator it imports is also called echo_synthetic."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("echo_synthetic_benchmark",
                                                  os.path.join(REPO, "benchmarks", "echo_synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


echo_synthetic = _load_echo_benchmark()

COLLECTION = "676"
COLLECTION_MEMBER_IDS = (677, 678, 679, 680)
NAME = "SynthEchoValCost"

EPOCH = """
import json, sys, time, torch
torch.set_num_threads(1)
from nnunetv2.run.run_training import get_trainer_from_args
trainer = get_trainer_from_args("{collection}", "3d_fullres", "all", "EchoPromptTrainer_cpuBench", "{plans}",
                                device=torch.device("cpu"))
trainer.validation_batches = None if sys.argv[1] == "None" else int(sys.argv[1])
trainer.num_epochs = 1
trainer.on_train_start()
trainer.on_train_epoch_start()
start = time.time()
outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(trainer.num_iterations_per_epoch)]
trained = time.time() - start
trainer.on_train_epoch_end(outputs)
with torch.no_grad():
    trainer.on_validation_epoch_start()
    start = time.time()
    val = [trainer.validation_step(next(trainer.dataloader_val)) for _ in range(trainer.num_val_iterations_per_epoch)]
    validated = time.time() - start
    trainer.on_validation_epoch_end(val)
print("RESULT", json.dumps({{"train_iterations": trainer.num_iterations_per_epoch, "train_seconds": trained,
                            "val_iterations": trainer.num_val_iterations_per_epoch, "val_seconds": validated}}))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips_per_member", type=int, default=60)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "echo_validation_cost_cpu.json"))
    args = parser.parse_args(argv)
    root = args.workdir or tempfile.mkdtemp(prefix="echo_val_")
    members = [(COLLECTION_MEMBER_IDS[i], f"{name}V", prefix, dataset, view, endo)
               for i, (_, name, prefix, dataset, view, endo) in enumerate(echo_synthetic.MEMBERS)]
    env = echo_synthetic.prepare(root, COLLECTION, NAME, members, args.clips_per_member)
    env = dict(env, nnUNet_n_proc_DA="0")
    given = list(argv if argv is not None else sys.argv[1:])
    if args.workdir:  # no machine paths in the recorded command
        given[given.index(args.workdir)] = "$WORKDIR"
    report = {"command": "python benchmarks/echo_validation_cost.py " + " ".join(given), "settings": {}}
    for label, batches in (("every clip (before)", "None"), ("fixed subset, 50 batches (default)", "50")):
        proc = subprocess.run([sys.executable, "-c", EPOCH.format(collection=COLLECTION, plans=echo_synthetic.PLANS),
                               batches], env=env, check=True, capture_output=True, text=True, encoding="utf-8")
        result = {k: round(v, 1) for k, v in json.loads(proc.stdout.split("RESULT", 1)[1]).items()}
        result["epoch_seconds"] = round(result["train_seconds"] + result["val_seconds"], 1)
        report["settings"][label] = result
        print(label, result, flush=True)
    before, after = report["settings"].values()
    per_train = before["train_seconds"] / before["train_iterations"]
    per_val = before["val_seconds"] / before["val_iterations"]
    paper_iterations = -(-15800 // 5)
    report["paper_scale_from_these_per_iteration_times"] = {
        "clips": 15800, "batch": 5, "train_iterations": paper_iterations,
        "before_val_iterations": paper_iterations, "after_val_iterations": 50,
        "epoch_time_ratio_after_to_before": round((paper_iterations * per_train + 50 * per_val) /
                                                  (paper_iterations * (per_train + per_val)), 3)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
