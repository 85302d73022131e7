"""What nnU-Net's worker processes cost a CPU user: `nnUNetv2_universal_predict --task` on one folder, timed from
the shell (start-up included), with nnU-Net's worker processes (`-npp 3 -nps 3`, the command's default until
2026-12-07) and with its default now (on a CPU: everything in this process). Alternating runs, medians.

    python benchmarks/prediction_workers.py -i IMAGES -d 910 -p UniSegPlansCPUDemo -tr UniSegTrainerTaskHeads_cpuDemo \
        --task RealLiverCT --out benchmarks/prediction_workers_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {"workers (-npp 3 -nps 3)": ["-npp", "3", "-nps", "3"], "default (on a CPU: in this process)": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-i", required=True, help="input folder (CASE_0000<ending> ...)")
    p.add_argument("-d", required=True)
    p.add_argument("-p", default="UniSegPlans")
    p.add_argument("-tr", default="UniSegTrainer")
    p.add_argument("--task", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    command = [os.path.join(os.path.dirname(sys.executable), "nnUNetv2_universal_predict"), "-i", args.i, "-d",
               args.d, "-p", args.p, "-tr", args.tr, "--task", args.task, "-device", "cpu", "--disable_progress_bar"]
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_npp", "nnUNet_nps")}
    seconds = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            for name, flags in VARIANTS.items():
                out = os.path.join(root, "out")
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                subprocess.run(command + ["-o", out] + flags, env=env, check=True, capture_output=True)
                seconds[name].append(round(time.perf_counter() - start, 1))
                print(f"{name}: {seconds[name][-1]} s", flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "cases": len(os.listdir(args.i)),
              "task": args.task, "seconds": seconds,
              "median_seconds": {name: statistics.median(v) for name, v in seconds.items()}}
    print(json.dumps(result["median_seconds"], indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
