"""Does the condition decide what is segmented? Trainers side by side on a shared-anatomy collection.

    python benchmarks/conditioning.py --trainers UniSegTrainer_cpuDemo DoDNetTrainer_cpuDemo --seeds 0 1 2 \
        [--workdir DIR] [--parallel 2] [--out benchmarks/conditioning_cpu.json]

The demo's synthetic collection (`nnunetv2_universal.demo.synthetic`): two CT tasks whose images all show liver,
lesion and kidneys, each labelling only its own structures, plus PET/CT and 4-channel brain MR. It is written,
built, planned and preprocessed (template `cpu_demo`) once with the console scripts. Each (trainer, seed) then
trains in its own process (one thread; `--parallel` processes at a time) with nnU-Net's trainer class, and
after every epoch two held-out cases of each CT task are predicted under each CT task (non-overlapping tiles, in
preprocessed space):
- cross-activation: the fraction of another task's structure (from structuresTs/) that a task labels;
- own Dice: mean Dice of the task's labels on its own held-out cases.
"Iterations to separate" = iterations up to the first epoch after which every CT task's cross-activation stays
<= 5 %. After training, every task's held-out cases are predicted from the raw files as `--task` and
`--all-tasks` do (nnU-Net's resampling and export) and scored in the original geometry.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BIN = os.path.dirname(sys.executable)
COLLECTION = "900"
FIRST_ID = 501
PLANS = "UniSegPlansCPUDemo"
SEPARATED = 0.05
DEMO_SUFFIX = "_cpuDemo"


def prepare(root: str, num_train: int, num_test: int) -> dict:
    env = dict(os.environ, nnUNet_raw=os.path.join(root, "raw"), nnUNet_preprocessed=os.path.join(root, "pre"),
               nnUNet_results=os.path.join(root, "results"), nnUNet_def_n_proc="1")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[key], exist_ok=True)
    if os.path.isdir(os.path.join(env["nnUNet_preprocessed"], f"Dataset{COLLECTION}_Synth")):
        return env
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from nnunetv2_universal.demo.synthetic import SYNTHETIC_TASKS, make_synthetic_datasets
    make_synthetic_datasets(env["nnUNet_raw"], FIRST_ID, num_train=num_train, num_test=num_test, seed=0)
    ids = [str(FIRST_ID + i) for i in range(len(SYNTHETIC_TASKS))]
    for cmd in (["nnUNetv2_universal_build_collection", "-d", *ids, "-o", COLLECTION, "-n", "Synth"],
                ["nnUNetv2_universal_plan_and_preprocess", "-d", COLLECTION, "-pl", "cpu_demo", "-np", "1",
                 "--no_pbar"]):
        subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], env=env, check=True, stdout=subprocess.DEVNULL)
    return env


# ---------------------------------------------------------------- one training run (child process)
def train_and_track(trainer_name: str, seed: int, out_file: str) -> None:
    import random
    import torch
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2_universal.cli import TRAINER_FOLDER
    cls = recursive_find_python_class(TRAINER_FOLDER, trainer_name, "nnunetv2_universal.nnunet_trainers")
    if cls is None and trainer_name.endswith(DEMO_SUFFIX):  # any plugin trainer on the demo's schedule
        from nnunetv2_universal.training.variants.short_schedules import _DemoSchedule, _NoMirroring
        base = recursive_find_python_class(TRAINER_FOLDER, trainer_name[:-len(DEMO_SUFFIX)],
                                           "nnunetv2_universal.nnunet_trainers")
        mixins = (_DemoSchedule,) if base is None or issubclass(base, _NoMirroring) else (_NoMirroring, _DemoSchedule)
        cls = None if base is None else type(trainer_name, (*mixins, base), {})
    if cls is None:
        raise SystemExit(f"trainer {trainer_name} not found")
    from nnunetv2_universal.demo.held_out import HeldOut
    history = []

    class Tracked(cls):
        def on_train_start(self):
            super().on_train_start()
            self.held_out = HeldOut(self, FIRST_ID)

        def on_epoch_end(self):
            entry = {"epoch": self.current_epoch, "tasks": self.held_out.per_epoch()}
            history.append(entry)
            super().on_epoch_end()

        def perform_actual_validation(self, save_probabilities: bool = False):
            pass  # scored below from the raw files

    Tracked.__name__ = cls.__name__
    folder = join(nnUNet_preprocessed, f"Dataset{COLLECTION}_Synth")
    plans = dict(load_json(join(folder, f"{PLANS}.json")), continue_training=False)  # as nnU-Net 2.8 run_training
    trainer = Tracked(plans, "3d_fullres", 0,
                      load_json(join(folder, "dataset.json")), torch.device("cpu"))
    start = time.time()
    trainer.run_training()
    train_time = time.time() - start
    with tempfile.TemporaryDirectory() as tmp:
        final = trainer.held_out.final(tmp)
    iterations = trainer.num_iterations_per_epoch
    crosses = [max(e["tasks"][t]["cross_activation"] for t in e["tasks"]) for e in history]
    separated_at = None
    for i in range(len(crosses)):
        if all(c <= SEPARATED for c in crosses[i:]):
            separated_at = i
            break
    diagnostic = trainer.logger.local_logger.my_fantastic_logging.get("condition_sensitivity")
    with open(out_file, "w") as f:
        json.dump({"trainer": trainer_name, "seed": seed, "train_seconds": train_time,
                   "iterations_per_epoch": iterations, "epochs": trainer.num_epochs,
                   "iterations_to_separate": None if separated_at is None else (separated_at + 1) * iterations,
                   "final": final, "history": history, "condition_sensitivity": diagnostic}, f, indent=1)


# ---------------------------------------------------------------- driver
def summarise(runs) -> dict:
    table = {}
    for r in runs:
        table.setdefault(r["trainer"], []).append(r)
    summary = {}
    for trainer, rs in table.items():
        tasks = rs[0]["final"].keys()
        med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
        its = [r["iterations_to_separate"] for r in rs]
        summary[trainer] = {
            "seeds": [r["seed"] for r in rs],
            "iterations_to_separate": its,
            "iterations_to_first_separation": [_first_separation(r) for r in rs],
            # per run the largest cross-activation of any task, then the median over runs
            "cross_activation_max": med([max([v["cross_activation"] for v in r["final"].values()
                                              if v["cross_activation"] is not None] or [0.0]) for r in rs]),
            "median_iterations_to_separate": med([i if i is not None else float("inf") for i in its]),
            "tasks": {t: {k: med([r["final"][t][k] for r in rs if r["final"][t][k] is not None])
                          for k in ("task_dice", "all_tasks_dice", "cross_activation")} for t in tasks}}
    return summary


def _first_separation(run: dict):
    """Iterations up to the first epoch at which every CT task's cross-activation is <= 5 % (None: never)."""
    for e in run["history"]:
        if max(t["cross_activation"] for t in e["tasks"].values()) <= SEPARATED:
            return (e["epoch"] + 1) * run["iterations_per_epoch"]
    return None


def print_table(summary: dict) -> None:
    print(f"\n{'trainer':34s} {'task':14s} {'--task':>7s} {'--all':>7s} {'cross':>7s}  iterations to separate")
    for trainer, s in summary.items():
        its = ", ".join("never" if i is None else str(i) for i in s["iterations_to_separate"])
        for j, (task, v) in enumerate(s["tasks"].items()):
            fmt = lambda x: "   -   " if x is None else f"{x:7.3f}"  # noqa: E731
            print(f"{trainer if j == 0 else '':34s} {task:14s} {fmt(v['task_dice'])} {fmt(v['all_tasks_dice'])} "
                  f"{fmt(v['cross_activation'])}  {its if j == 0 else ''}")


def markdown(summary: dict) -> str:
    """The side-by-side table of the docs: medians over seeds; iterations to separate per seed."""
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    tasks = list(next(iter(summary.values()))["tasks"])
    head = "| trainer | " + " | ".join(f"{t} --task / --all" for t in tasks) + \
        " | cross (largest per run) | iterations to separate (per seed) | first epoch <= 5 % (iterations) |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    for trainer, s in summary.items():
        its, first = (", ".join("never" if i is None else f"{i:,}" for i in s[k])
                      for k in ("iterations_to_separate", "iterations_to_first_separation"))
        lines.append(f"| `{trainer}` | " + " | ".join(
            f"{fmt(v['task_dice'])} / {fmt(v['all_tasks_dice'])}" for v in s["tasks"].values()) +
            f" | {fmt(s['cross_activation_max'])} | {its} | {first} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainers", nargs="+", default=["UniSegTrainer_cpuDemo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", default=None, help="reuse this folder (data are prepared once)")
    parser.add_argument("--parallel", type=int, default=2, help="training processes at a time (one thread each)")
    parser.add_argument("--num_train", type=int, default=8)
    parser.add_argument("--num_test", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--report", default=None, help="print the markdown table of an --out file, or of every "
                        "finished run in a --workdir, and exit")
    parser.add_argument("--demo_reference", action="store_true", help="with --report DIR: store the paper "
                        "network's medians where the demo prints them beside its own")
    parser.add_argument("--_child", nargs=3, metavar=("TRAINER", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        train_and_track(args._child[0], int(args._child[1]), args._child[2])
        return
    if args.report:
        if os.path.isdir(args.report):
            runs_dir = os.path.join(args.report, "runs")
            runs = [json.load(open(os.path.join(runs_dir, f))) for f in sorted(os.listdir(runs_dir))
                    if f.endswith(".json")]
            order = {t: i for i, t in enumerate(args.trainers)}
            runs.sort(key=lambda r: (order.get(r["trainer"], len(order)), r["seed"]))
            summary = summarise(runs)
            if args.out:
                _write(args.out, root=args.report, summary=summary, runs=runs)
            if args.demo_reference:
                write_demo_reference(summary)
        else:
            with open(args.report) as f:
                summary = json.load(f)["summary"]
        print(markdown(summary))
        return
    root = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="conditioning_"))
    env = prepare(root, args.num_train, args.num_test)
    runs_dir = os.path.join(root, "runs")
    os.makedirs(runs_dir, exist_ok=True)

    def one(job):
        trainer, seed = job
        out = os.path.join(runs_dir, f"{trainer}_seed{seed}.json")
        if not os.path.isfile(out):
            child_env = dict(env, nnUNet_results=os.path.join(root, "results", f"seed{seed}"), nnUNet_n_proc_DA="0",
                             OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            with open(out[:-5] + ".log", "w") as log:
                subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", trainer, str(seed), out],
                               env=child_env, check=True, stdout=log, stderr=subprocess.STDOUT)
        with open(out) as f:
            run = json.load(f)
        print(f"{trainer} seed {seed}: iterations to separate {run['iterations_to_separate']}, "
              f"{ {t: round(v['cross_activation'] or 0, 3) for t, v in run['final'].items()} } cross, "
              f"{run['train_seconds']:.0f} s", flush=True)
        return run

    jobs = [(t, s) for t in args.trainers for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(one, jobs))
    summary = summarise(runs)
    print_table(summary)
    if args.out:
        _write(args.out, root, summary, runs)


def write_demo_reference(summary: dict) -> None:
    from nnunetv2_universal.demo.run_demo import PAPER_TRAINER
    if PAPER_TRAINER not in summary:
        raise SystemExit(f"no runs of {PAPER_TRAINER} to take the demo's reference numbers from")
    s = summary[PAPER_TRAINER]
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nnunetv2_universal", "demo",
                        "paper_network_numbers.json")
    with open(path, "w") as f:
        json.dump({"trainer": PAPER_TRAINER, "seeds": s["seeds"], "tasks": s["tasks"],
                   "iterations_to_separate": s["iterations_to_separate"],
                   "command": f"python benchmarks/conditioning.py --trainers {PAPER_TRAINER} --seeds "
                              f"{' '.join(map(str, s['seeds']))}"}, f, indent=1)
    print(f"wrote {path}")


def _write(path: str, root: str, summary: dict, runs) -> None:
    with open(path, "w") as f:
        json.dump({"workdir": root, "summary": summary,
                   "runs": [{k: v for k, v in r.items() if k != "history"} | {"cross_per_epoch": [
                       max(t["cross_activation"] for t in e["tasks"].values()) for e in r["history"]]}
                            for r in runs]}, f, indent=1)


if __name__ == "__main__":
    main()
