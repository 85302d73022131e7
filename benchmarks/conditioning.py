"""Does the condition decide what is segmented? Trainers side by side on a shared-anatomy collection.

    python benchmarks/conditioning.py --trainers UniSegTrainer_cpuDemo DoDNetTrainer_cpuDemo --seeds 0 1 2 \
        [--workdir DIR] [--parallel 2] [--out benchmarks/conditioning_cpu.json]
    python benchmarks/conditioning.py --data real --source TotalSegmentator/tests/reference_files ... [--single_task]

`--data real` is the real-CT collection of `nnunetv2_universal.demo.real_ct` (benchmarks/real_anatomy.py runs it);
`--single_task` also trains each trainer on every task alone (a one-member collection) for as many iterations as
the multi-task run has in total; with `--single_task_budget share` for the task's share of them instead (the
multi-task run's iterations over its number of tasks: the single-task models together cost what it costs).

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
PLANS = "UniSegPlansCPUDemo"
SEPARATED = 0.05
DEMO_SUFFIX = "_cpuDemo"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Data:
    """One benchmark collection: its member tasks (PartialLabelTask), ids, and how its members are written."""

    def __init__(self, key: str, collection: int, name: str, first_id: int):
        self.key, self.collection, self.name, self.first_id = key, collection, name, first_id

    @property
    def tasks(self):
        if self.key == "real":
            from nnunetv2_universal.demo.real_ct import REAL_TASKS
            return REAL_TASKS
        from nnunetv2_universal.demo.synthetic import SYNTHETIC_TASKS
        return SYNTHETIC_TASKS

    def member(self, i: int) -> str:
        return f"Dataset{self.first_id + i:03d}_{self.tasks[i].name}"

    def single_task_collection(self, i: int) -> tuple:
        """(id, name) of the collection holding task i alone."""
        return self.collection + 1 + i, f"{self.name}Only{self.tasks[i].name}"

    def collections(self, single_task: bool):
        yield self.collection, self.name, list(range(len(self.tasks)))
        if single_task:
            for i in range(len(self.tasks)):
                yield (*self.single_task_collection(i), [i])

    def write_members(self, raw: str, num_train: int, num_test: int, source) -> None:
        if self.key == "real":
            if not source:
                raise SystemExit("--data real needs --source (TotalSegmentator's tests/reference_files folder)")
            # TotalSegmentator's test files (one training patient) or its dataset (meta.csv: many patients)
            many = os.path.isfile(os.path.join(source, "meta.csv"))
            command = ["nnUNetv2_universal_convert_totalseg_dataset", "--num_test", str(num_test)] if many else \
                ["nnUNetv2_universal_convert_totalseg_examples"]
            subprocess.run([os.path.join(BIN, command[0]), *command[1:], "-i", source, "-d", str(self.first_id),
                            "--num_train", str(num_train)], env=dict(os.environ, nnUNet_raw=raw), check=True,
                           stdout=subprocess.DEVNULL)
        else:
            from nnunetv2_universal.demo.synthetic import make_synthetic_datasets
            make_synthetic_datasets(raw, self.first_id, num_train=num_train, num_test=num_test, seed=0)

    def group_of(self, case: str):
        """Held-out case -> the group its numbers are reported for (real data: the patient); None: one group."""
        if self.key == "real":
            from nnunetv2_universal.demo.real_ct import patient_of
            return patient_of(case)
        return None


DATA = {"synthetic": Data("synthetic", 900, "Synth", 501), "real": Data("real", 910, "RealCT", 511)}


def prepare(root: str, data: Data, num_train: int, num_test: int, source=None, single_task: bool = False,
            antialias: bool = False) -> dict:
    env = dict(os.environ, nnUNet_raw=os.path.join(root, "raw"), nnUNet_preprocessed=os.path.join(root, "pre"),
               nnUNet_results=os.path.join(root, "results"), nnUNet_def_n_proc="1")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[key], exist_ok=True)
    if not os.path.isdir(os.path.join(env["nnUNet_raw"], data.member(0))):
        data.write_members(env["nnUNet_raw"], num_train, num_test, source)
    template = "cpu_demo"
    if antialias:  # the cpu_demo plans with anti-aliased image downsampling (in training and prediction)
        from nnunetv2_universal.collection.templates import load_template
        template = os.path.join(root, "cpu_demo_antialias.json")
        with open(template, "w") as f:
            json.dump({**load_template("cpu_demo"), "antialias": True}, f, indent=1)
    for collection, name, tasks in data.collections(single_task):
        if os.path.isdir(os.path.join(env["nnUNet_preprocessed"], f"Dataset{collection}_{name}")):
            continue
        ids = [str(data.first_id + i) for i in tasks]
        for cmd in (["nnUNetv2_universal_build_collection", "-d", *ids, "-o", str(collection), "-n", name],
                    ["nnUNetv2_universal_plan_and_preprocess", "-d", str(collection), "-pl", template, "-np", "1",
                     "--no_pbar"]):
            subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], env=env, check=True, stdout=subprocess.DEVNULL)
    for collection, name, _ in data.collections(single_task):
        with open(os.path.join(env["nnUNet_preprocessed"], f"Dataset{collection}_{name}", PLANS + ".json")) as f:
            planned = json.load(f)["configurations"]["3d_fullres"]["resampling_fn_data"]
        if (planned == "resample_data_antialiased_to_shape") != antialias:
            raise SystemExit(f"{root} was prepared {'without' if antialias else 'with'} --antialias; use another "
                             f"--workdir")
    return env


# ---------------------------------------------------------------- one training run (child process)
def train_and_track(trainer_name: str, seed: int, out_file: str, data: Data, only_task=None,
                    budget: str = "total", epochs=None) -> None:
    """Train `trainer_name` on the data's collection (or, with `only_task`, on that task alone for as many
    iterations as the whole collection's run, or with budget "share" for its share of them), scoring the held-out
    cases after every epoch and at the end; `epochs`: instead of the trainer's own number."""
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
    collection, name = data.collection, data.name
    tasks = list(data.tasks)
    if only_task is not None:
        i = [t.name for t in tasks].index(only_task)
        collection, name = data.single_task_collection(i)
        # as many iterations as the multi-task run (every batch is this task's), or the task's share of them
        per_epoch = cls.batches_per_task_per_epoch * (len(tasks) if budget == "total" else 1)
        cls = type(cls.__name__, (cls,), {"batches_per_task_per_epoch": per_epoch})
        members = {only_task: data.member(i)}
    else:
        members = {t.name: data.member(i) for i, t in enumerate(tasks)}
    from nnunetv2_universal.demo.held_out import HeldOut
    history = []

    class Tracked(cls):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):  # nnU-Net records these arguments by name
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs or self.num_epochs  # before initialize() builds the learning-rate schedule

        def on_train_start(self):
            super().on_train_start()
            # the per-epoch curve on in-distribution cases (real data: the training patient's held-out crop)
            self.held_out = HeldOut(self, tasks=tasks, members=members,
                                    per_epoch_cases=lambda case: data.group_of(case) in (None, "a"))

        def on_epoch_end(self):
            entry = {"epoch": self.current_epoch, "tasks": self.held_out.per_epoch()}
            history.append(entry)
            super().on_epoch_end()

        def perform_actual_validation(self, save_probabilities: bool = False):
            pass  # scored below from the raw files

    Tracked.__name__ = cls.__name__
    folder = join(nnUNet_preprocessed, f"Dataset{collection}_{name}")
    plans = dict(load_json(join(folder, f"{PLANS}.json")), continue_training=False)  # as nnU-Net 2.8 run_training
    trainer = Tracked(plans, "3d_fullres", 0,
                      load_json(join(folder, "dataset.json")), torch.device("cpu"))
    start = time.time()
    trainer.run_training()
    train_time = time.time() - start
    with tempfile.TemporaryDirectory() as tmp:
        final = trainer.held_out.final(tmp)
    iterations = trainer.num_iterations_per_epoch
    crosses = [max([e["tasks"][t]["cross_activation"] for t in e["tasks"]] or [0.0]) for e in history]
    separated_at = None
    for i in range(len(crosses) if any(e["tasks"] for e in history) else 0):  # no shared tasks: nothing to separate
        if all(c <= SEPARATED for c in crosses[i:]):
            separated_at = i
            break
    diagnostic = trainer.logger.local_logger.my_fantastic_logging.get("condition_sensitivity")
    with open(out_file, "w") as f:
        json.dump({"trainer": trainer_name, "seed": seed, "only_task": only_task, "single_task_budget": budget,
                   "train_seconds": train_time,
                   "iterations_per_epoch": iterations, "epochs": trainer.num_epochs,
                   "iterations_to_separate": None if separated_at is None else (separated_at + 1) * iterations,
                   "final": final, "history": history, "condition_sensitivity": diagnostic}, f, indent=1)


# ---------------------------------------------------------------- driver
def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def _group_means(run: dict, task: str, data: Data) -> dict:
    """Per group of held-out cases (real data: patient a / b) the mean of each metric; {} without groups."""
    cases = run["final"][task].get("cases", {})
    groups = {}
    for case, values in cases.items():
        g = data.group_of(case)
        if g is not None:
            groups.setdefault(g, []).append(values)
    keys = ("task_dice", "all_tasks_dice", "cross_activation", "task_dice_as_stored")
    return {g: {k: _mean_or_none([v.get(k) for v in vs]) for k in keys} for g, vs in sorted(groups.items())}


def _mean_or_none(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def summarise(runs, data: Data) -> dict:
    """Medians over seeds per trainer (multi-task runs); single-task runs give each task's `single_task` numbers."""
    table, single = {}, {}
    for r in runs:
        if r.get("only_task"):
            single.setdefault((r["trainer"], r["only_task"], r.get("single_task_budget", "total")), []).append(r)
        else:
            table.setdefault(r["trainer"], []).append(r)
    summary = {}
    for trainer, rs in table.items():
        tasks = rs[0]["final"].keys()
        its = [r["iterations_to_separate"] for r in rs]
        summary[trainer] = {
            "seeds": [r["seed"] for r in rs],
            "iterations_to_separate": its,
            "iterations_to_first_separation": [_first_separation(r) for r in rs],
            # per run the largest cross-activation of any task, then the median over runs
            "cross_activation_max": _median([max([v["cross_activation"] for v in r["final"].values()
                                                  if v["cross_activation"] is not None] or [0.0]) for r in rs]),
            "median_iterations_to_separate": _median([i if i is not None else float("inf") for i in its]),
            "tasks": {t: {k: _median([r["final"][t][k] for r in rs])
                          for k in ("task_dice", "all_tasks_dice", "cross_activation")} for t in tasks}}
        for t in tasks:
            groups = [_group_means(r, t, data) for r in rs]
            if groups[0]:
                summary[trainer]["tasks"][t]["groups"] = {
                    g: {k: _median([gr[g][k] for gr in groups]) for k in groups[0][g]} for g in groups[0]}
            for budget, key in (("total", "single_task"), ("share", "single_task_share")):
                alone = single.get((trainer, t, budget))
                if alone:
                    summary[trainer]["tasks"][t][key] = _single_task_entry(alone, t, data)
    return summary


def _single_task_entry(alone: list, t: str, data: Data) -> dict:
    """Medians over the seeds of one task's single-task runs."""
    entry = {"seeds": [r["seed"] for r in alone],
             "task_dice": _median([r["final"][t]["task_dice"] for r in alone]),
             "cross_activation": _median([r["final"][t]["cross_activation"] for r in alone])}
    groups = [_group_means(r, t, data) for r in alone]
    if groups[0]:
        entry["groups"] = {g: {k: _median([gr[g][k] for gr in groups]) for k in groups[0][g]} for g in groups[0]}
    return entry


def _first_separation(run: dict):
    """Iterations up to the first epoch at which every CT task's cross-activation is <= 5 % (None: never)."""
    for e in run["history"]:
        if max([t["cross_activation"] for t in e["tasks"].values()] or [0.0]) <= SEPARATED:
            return (e["epoch"] + 1) * run["iterations_per_epoch"]
    return None


def print_table(summary: dict) -> None:
    print(markdown(summary))


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(summary: dict) -> str:
    """The side-by-side table of the docs: medians over seeds; iterations to separate per seed. With groups (real
    data): one row per trainer and patient group, own Dice beside the single-task model's."""
    first = next(iter(summary.values()))
    tasks = list(first["tasks"])
    grouped = "groups" in first["tasks"][tasks[0]]
    its_cols = lambda s: tuple(", ".join("never" if i is None else f"{i:,}" for i in s[k])  # noqa: E731
                               for k in ("iterations_to_separate", "iterations_to_first_separation"))
    if not grouped:
        head = "| trainer | " + " | ".join(f"{t} --task / --all" for t in tasks) + \
            " | cross (largest per run) | iterations to separate (per seed) | first epoch <= 5 % (iterations) |"
        lines = [head, "|" + "---|" * (len(tasks) + 4)]
        for trainer, s in summary.items():
            its, first_sep = its_cols(s)
            lines.append(f"| `{trainer}` | " + " | ".join(
                f"{_fmt(v['task_dice'])} / {_fmt(v['all_tasks_dice'])}" for v in s["tasks"].values()) +
                f" | {_fmt(s['cross_activation_max'])} | {its} | {first_sep} |")
        return "\n".join(lines)
    head = "| trainer | patient | " + " | ".join(f"{t} --task / --all / alone (its cross) / cross" for t in tasks) + \
        " | iterations to separate (per seed) | first epoch <= 5 % (iterations) |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    for trainer, s in summary.items():
        its, first_sep = its_cols(s)
        for j, g in enumerate(s["tasks"][tasks[0]]["groups"]):
            cells = []
            for t in tasks:
                v = s["tasks"][t]["groups"][g]
                single = s["tasks"][t].get("single_task", {}).get("groups", {}).get(g, {})
                alone = None if not single else f"{_fmt(single['task_dice'])} ({_fmt(single['cross_activation'])})"
                share = s["tasks"][t].get("single_task_share", {}).get("groups", {}).get(g)
                if share:  # the single-task model on the task's share of the iterations
                    alone = f"{alone or '-'}; at its share {_fmt(share['task_dice'])}"
                stored = "" if v.get("task_dice_as_stored") is None else \
                    f" (as stored: {_fmt(v['task_dice_as_stored'])})"
                cells.append(f"{_fmt(v['task_dice'])}{stored} / {_fmt(v['all_tasks_dice'])} / {alone or '-'} / "
                             f"{_fmt(v['cross_activation'])}")
            lines.append(f"| {'`' + trainer + '`' if j == 0 else ''} | {g} | " + " | ".join(cells) +
                         f" | {its if j == 0 else ''} | {first_sep if j == 0 else ''} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(DATA), default="synthetic")
    parser.add_argument("--source", default=None, help="--data real: TotalSegmentator's tests/reference_files, or the "
                        "unzipped TotalSegmentator dataset (meta.csv; --num_train subjects per task, --num_test held "
                        "out from each of its val and test splits)")
    parser.add_argument("--single_task", action="store_true", help="also train each trainer on every task alone "
                        "(as many iterations as the multi-task run)")
    parser.add_argument("--single_task_budget", choices=("total", "share"), default="total",
                        help="--single_task: the multi-task run's iterations (total) or the task's share of them")
    parser.add_argument("--trainers", nargs="+", default=["UniSegTrainer_cpuDemo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", default=None, help="reuse this folder (data are prepared once)")
    parser.add_argument("--parallel", type=int, default=2, help="training processes at a time (one thread each)")
    parser.add_argument("--antialias", action="store_true", help="plan with the template key `antialias` (images "
                        "smoothed before downsampling, in training and prediction); use a fresh --workdir")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run instead of the trainer's (the "
                        "demo's 50); use a fresh --workdir")
    parser.add_argument("--num_train", type=int, default=8)
    parser.add_argument("--num_test", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("--report", default=None, help="print the markdown table of an --out file, or of every "
                        "finished run in a --workdir, and exit")
    parser.add_argument("--demo_reference", action="store_true", help="with --report DIR: store the paper "
                        "network's medians where the demo prints them beside its own")
    parser.add_argument("--_child", nargs=4, metavar=("TRAINER", "SEED", "OUT", "ONLY_TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = DATA[args.data]
    if args._child:
        trainer, seed, out, only = args._child
        train_and_track(trainer, int(seed), out, data, None if only == "-" else only, args.single_task_budget,
                        args.epochs)
        return
    if args.report:
        if os.path.isdir(args.report):
            runs_dir = os.path.join(args.report, "runs")
            runs = [json.load(open(os.path.join(runs_dir, f))) for f in sorted(os.listdir(runs_dir))
                    if f.endswith(".json")]
            order = {t: i for i, t in enumerate(args.trainers)}
            runs = [r for r in runs if r["trainer"] in order] if args.trainers != parser.get_default("trainers") \
                else runs
            runs.sort(key=lambda r: (order.get(r["trainer"], len(order)), r["seed"]))
            summary = summarise(runs, data)
            if args.out:
                _write(args.out, summary=summary, runs=runs)
            if args.demo_reference:
                write_demo_reference(summary)
        else:
            with open(args.report) as f:
                summary = json.load(f)["summary"]
        print(markdown(summary))
        return
    root = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="conditioning_"))
    env = prepare(root, data, args.num_train, args.num_test, args.source, args.single_task, args.antialias)
    runs_dir = os.path.join(root, "runs")
    os.makedirs(runs_dir, exist_ok=True)

    def one(job):
        trainer, seed, only = job
        share = "_share" if only is not None and args.single_task_budget == "share" else ""
        out = os.path.join(runs_dir, f"{trainer}{'' if only is None else '_only' + only}{share}_seed{seed}.json")
        if not os.path.isfile(out):
            child_env = dict(env, nnUNet_results=os.path.join(root, "results", f"seed{seed}"), nnUNet_n_proc_DA="0",
                             OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            with open(out[:-5] + ".log", "w") as log:
                subprocess.run([sys.executable, os.path.abspath(__file__), "--data", args.data, "--single_task_budget",
                                args.single_task_budget, "--_child", trainer, str(seed), out, only or "-"]
                               + ([] if args.epochs is None else ["--epochs", str(args.epochs)]),
                               env=child_env, check=True, stdout=log,
                               stderr=subprocess.STDOUT)
        with open(out) as f:
            run = json.load(f)
        print(f"{trainer}{'' if only is None else ' on ' + only + ' alone'} seed {seed}: iterations to separate "
              f"{run['iterations_to_separate']}, "
              f"{ {t: round(v['cross_activation'] or 0, 3) for t, v in run['final'].items()} } cross, "
              f"{run['train_seconds']:.0f} s", flush=True)
        return run

    alone = [t.name for t in data.tasks] if args.single_task else []
    jobs = [(t, s, only) for t in args.trainers for s in args.seeds for only in [None] + alone]
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(one, jobs))
    summary = summarise(runs, data)
    print_table(summary)
    if args.out:
        _write(args.out, summary, runs)


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


def _write(path: str, summary: dict, runs) -> None:
    with open(path, "w") as f:
        json.dump({"summary": summary,
                   "runs": [{k: v for k, v in r.items() if k != "history"} | {"cross_per_epoch": [
                       max([t["cross_activation"] for t in e["tasks"].values()] or [0.0]) for e in r["history"]]}
                            for r in runs]}, f, indent=1)


if __name__ == "__main__":
    main()
