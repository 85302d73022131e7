"""How long the always-on training-data checks take (`nnUNetv2_universal_plan_and_preprocess` runs them before
fingerprinting; `build_collection` runs the header-only part).

    python benchmarks/training_data_checks.py --cases 1000 --shape 48 128 128 --out benchmarks/training_data_checks_cpu.json

Generates a dataset of --cases CT-like cases (int16 image with noise, uint8 label with two classes) in a temporary
folder, then times the full check (files, headers, label values, NaN: what planning runs) and the header-only check
(what build_collection runs). Generation is not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import SimpleITK as sitk

from nnunetv2_universal.collection.training_data_checks import check_training_data


def write_dataset(folder: str, cases: int, shape, float_images: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "imagesTr"))
    os.makedirs(os.path.join(folder, "labelsTr"))
    z, y, x = shape
    for i in range(cases):
        image = rng.normal(0, 200, shape).astype(np.float32 if float_images else np.int16)
        label = np.zeros(shape, np.uint8)
        label[z // 4:z // 2, y // 4:y // 2, x // 4:x // 2] = 1
        label[z // 2:3 * z // 4, y // 2:3 * y // 4, x // 2:3 * x // 4] = 2
        for array, path in ((image, f"imagesTr/case{i:04d}_0000.nii.gz"), (label, f"labelsTr/case{i:04d}.nii.gz")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing((0.8, 0.8, 2.5))
            sitk.WriteImage(itk, os.path.join(folder, path))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": cases,
                   "file_ending": ".nii.gz"}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", type=int, default=1000, help="number of generated cases (default 1000)")
    p.add_argument("--shape", type=int, nargs=3, default=[48, 128, 128], help="z y x voxels (default 48 128 128)")
    p.add_argument("--float_images", action="store_true", help="store images as float32 (the NaN scan reads them)")
    p.add_argument("--out", default=None, help="JSON file for the result")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "Dataset999_Check")
        start = time.perf_counter()
        write_dataset(folder, args.cases, args.shape, args.float_images)
        generated = time.perf_counter() - start
        timings = {}
        for name, read_values in (("headers_only", False), ("full", True)):
            start = time.perf_counter()
            check_training_data(folder, read_values)
            timings[name] = round(time.perf_counter() - start, 2)
    result = {"cases": args.cases, "shape_zyx": args.shape, "image_dtype": "float32" if args.float_images else "int16",
              "seconds": timings, "ms_per_case_full": round(1000 * timings["full"] / args.cases, 2),
              "generation_seconds": round(generated, 1), "machine": f"{platform.processor() or platform.machine()}, "
                                                                    f"{os.cpu_count()} cores"}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
