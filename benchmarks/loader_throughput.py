"""Task-balanced data loader vs nnU-Net's nnUNetDataLoader on the same preprocessed data (`make bench`).

    python benchmarks/loader_throughput.py [--batches 40] [--cases 8] [--patch 64 192 192] [--batch_size 2]
                                           [--workdir DIR] [--out results.json]

The synthetic 4-task collection (CT liver, CT kidney, PET/CT, 4-channel brain MR) is written, built, planned and
preprocessed with the plugin's console scripts in a temporary folder (template `cpu_demo`). Then, in this process
(= one data-augmentation worker), batches/s of `generate_train_batch()` are timed for:
- nnU-Net's nnUNetDataLoader over the cases of the two single-channel CT tasks (it cannot put cases with
  different channel counts in one batch), and TaskBalancedDataLoader over the same cases: the sampling overhead;
- TaskBalancedDataLoader over the whole collection (1, 2 and 4 channels): what a UniSeg worker delivers;
each once with loading + cropping only and once with the trainer's full training transforms.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)
COLLECTION = "900"


def prepare(root: str, cases: int) -> dict:
    """nnU-Net folders under root with the collection planned and preprocessed; returns the environment."""
    env = dict(os.environ, nnUNet_raw=os.path.join(root, "raw"), nnUNet_preprocessed=os.path.join(root, "pre"),
               nnUNet_results=os.path.join(root, "results"), nnUNet_def_n_proc="1")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[key], exist_ok=True)
    os.environ.update(env)  # nnU-Net reads its paths when first imported
    if os.path.isdir(os.path.join(env["nnUNet_preprocessed"], f"Dataset{COLLECTION}_Synth")):
        return env  # --workdir of an earlier run
    from nnunetv2_universal.demo.synthetic import make_synthetic_datasets
    make_synthetic_datasets(env["nnUNet_raw"], 501, num_train=cases, num_test=0, seed=3)
    for cmd in (["nnUNetv2_universal_build_collection", "-d", "501", "502", "503", "504", "-o", COLLECTION, "-n",
                 "Synth"],
                ["nnUNetv2_universal_plan_and_preprocess", "-d", COLLECTION, "-pl", "cpu_demo", "-np", "1",
                 "--no_pbar"]):
        subprocess.run([os.path.join(BIN, cmd[0])] + cmd[1:], env=env, check=True, stdout=subprocess.DEVNULL)
    return env


def batches_per_second(loader, batches: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        loader.generate_train_batch()
    start = time.perf_counter()
    for _ in range(batches):
        loader.generate_train_batch()
    return batches / (time.perf_counter() - start)


def measure(batches: int, patch=None, batch_size=None) -> dict:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    from nnunetv2_universal.collection.sampling import TaskBalancedDataLoader
    from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer

    folder = join(nnUNet_preprocessed, f"Dataset{COLLECTION}_Synth")
    plans = dict(load_json(join(folder, "UniSegPlansCPUDemo.json")), continue_training=False)
    configuration = plans["configurations"]["3d_fullres"]
    if patch:  # smaller cases are padded, as nnU-Net does
        configuration["patch_size"] = list(patch)
    if batch_size:
        configuration["batch_size"] = batch_size
    trainer = UniSegTrainer(plans, "3d_fullres", 0, load_json(join(folder, "dataset.json")),
                            device=torch.device("cpu"))
    trainer.initialize()  # batch size, oversampling, label manager as in training
    train_loader = trainer.get_dataloaders()[0].data_loader  # single-threaded augmenter (nnUNet_n_proc_DA=0)
    dataset = train_loader._data
    ct_tasks = [i for i, t in enumerate(trainer.registry) if t.modalities == ["CT"]]
    ct_cases = [k for k in dataset.identifiers if trainer.registry.task_of_case(k) in ct_tasks]
    ct_dataset = type(dataset)(dataset.source_folder, ct_cases)
    common = dict(label_manager=trainer.label_manager,
                  oversample_foreground_percent=trainer.oversample_foreground_percent,
                  probabilistic_oversampling=trainer.probabilistic_oversampling)
    sizes = (train_loader.patch_size, train_loader.final_patch_size)
    case_tasks = {k: trainer.registry.task_of_case(k) for k in dataset.identifiers}
    rows = {}
    for transforms_name, transforms in (("load + crop", None), ("full training transforms", train_loader.transforms)):
        loaders = {
            "nnUNetDataLoader, CT tasks": nnUNetDataLoader(ct_dataset, trainer.batch_size, *sizes,
                                                           transforms=transforms, **common),
            "TaskBalancedDataLoader, CT tasks": TaskBalancedDataLoader(ct_dataset, trainer.batch_size, *sizes,
                                                                       transforms=transforms, case_tasks=case_tasks,
                                                                       batches_per_task=1, **common),
            "TaskBalancedDataLoader, all 4 tasks": TaskBalancedDataLoader(dataset, trainer.batch_size, *sizes,
                                                                          transforms=transforms,
                                                                          case_tasks=case_tasks, batches_per_task=1,
                                                                          **common),
        }
        rows[transforms_name] = {name: batches_per_second(loader, batches) for name, loader in loaders.items()}
    return {"batch_size": trainer.batch_size, "patch_size": list(train_loader.final_patch_size),
            "cases": {"CT tasks": len(ct_cases), "all": len(dataset.identifiers)}, "batches_per_s": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--cases", type=int, default=8, help="training cases per synthetic task")
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="patch size (default: the cpu_demo plans'; "
                        "UniSeg's paper: 64 192 192)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the plans' (UniSeg's paper: 2)")
    parser.add_argument("--workdir", default=None, help="keep the nnU-Net folders here (default: temporary)")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    os.environ["nnUNet_n_proc_DA"] = "0"
    root = args.workdir or tempfile.mkdtemp(prefix="loader_bench_")
    prepare(root, args.cases)
    result = measure(args.batches, args.patch, args.batch_size)
    for transforms_name, rows in result["batches_per_s"].items():
        base = rows["nnUNetDataLoader, CT tasks"]
        print(f"\n{transforms_name} (batch {result['batch_size']}, patch {result['patch_size']}), one worker:")
        for name, rate in rows.items():
            print(f"  {name:38s} {rate:7.1f} batches/s  ({rate / base:.2f}x nnU-Net's loader)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
