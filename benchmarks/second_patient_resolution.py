"""How much of the second patient's error is resampling, or contrast? Models trained by benchmarks/real_anatomy.py
predict patient b (0.98 x 0.98 x 2 mm, downsampled to the task's 6 x 6 x 3 mm, about 6x in-plane) as stored and after an
anti-aliasing Gaussian (`--antialias`), and score own Dice and cross-activation in b's own geometry.

    python benchmarks/second_patient_resolution.py --workdir DIR --trainer UniSegTrainerTaskHeads_cpuDemo \
        --seeds 0 1 2 [--patient a] --out benchmarks/second_patient_resolution_cpu.json

nnU-Net resamples without anti-aliasing (third-order spline, no smoothing), so a fine CT brought to a coarse
target spacing aliases; the training patient (3 mm) is downsampled only 2x. Inputs, per task (`--task`):
- `as_stored`: b as the benchmark predicts it;
- `antialias`: b as stored, predicted with `--antialias` (smoothed in preprocessing with sigma = (factor - 1) / 2
  voxels per axis, factor = target spacing / spacing, the usual anti-aliasing rule, then nnU-Net's resampling);
- `smoothed_to_3mm`: b smoothed for, and resampled (linear) to, the training patient's 3 mm, then the pipeline;
- `body_minus_50hu`: b with every voxel above -200 HU lowered by 50 HU. b is contrast-enhanced (liver and spleen
  about 50 HU brighter than in a, see `median_hu` in the output): does the contrast phase explain the error?
- `z_extended`: b with its first and last slices repeated until it spans the training crops' 84 mm in z. b spans
  40 mm, less than the patch (16 slices at 3 mm = 48 mm), so nnU-Net pads it with zeros (0 HU after the CT
  normalisation), which no training crop (75 to 87 mm) needed: is the short scan the error?
Scores: Dice of the task's own structure, and the share of the other task's structure labelled (structuresTs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

MEMBERS = {"RealLiverCT": ("Dataset511_RealLiverCT", "realliverct", 1, 2),  # member, case prefix, own, other
           "RealSpleenCT": ("Dataset512_RealSpleenCT", "realspleenct", 2, 1)}  # structuresTs: liver 1, spleen 2
TRAINING_PATIENT_XYZ = (3.0, 3.0, 3.0)
BODY_HU, HU_SHIFT = -200.0, -50.0
TRAINING_CROP_Z_MM = 84.0


def anti_aliased(image: sitk.Image, target_xyz) -> sitk.Image:
    sigma_mm = [max(0.0, (t / s - 1) / 2) * s for t, s in zip(target_xyz, image.GetSpacing())]
    if min(sigma_mm) <= 0:  # (the filter needs sigma > 0 on every axis; only b, finer on every axis, is smoothed)
        return image
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma_mm)


def body_shifted(image: sitk.Image, shift: float) -> sitk.Image:
    array = sitk.GetArrayFromImage(image).astype("float32")
    array[array > BODY_HU] += shift
    shifted = sitk.GetImageFromArray(array)
    shifted.CopyInformation(image)
    return shifted


def z_extended(image: sitk.Image, extent_mm: float) -> sitk.Image:
    """The image with its edge slices repeated (half on each end) until it spans `extent_mm` in z."""
    missing = max(0, int(np.ceil(extent_mm / image.GetSpacing()[2])) - image.GetSize()[2])
    array = sitk.GetArrayFromImage(image)
    extended = sitk.GetImageFromArray(np.pad(array, ((missing // 2, missing - missing // 2), (0, 0), (0, 0)), "edge"))
    extended.SetSpacing(image.GetSpacing())
    extended.SetDirection(image.GetDirection())
    extended.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, -float(missing // 2))))
    return extended


INPUTS = ("as_stored", "antialias", "smoothed_to_3mm", "body_minus_50hu", "z_extended")


def inputs(image: sitk.Image, names=INPUTS) -> dict:
    """name -> (image, extra prediction flags)"""
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), TRAINING_PATIENT_XYZ)]
    make = {"as_stored": lambda: (image, []), "antialias": lambda: (image, ["--antialias"]),
            "smoothed_to_3mm": lambda: (sitk.Resample(anti_aliased(image, TRAINING_PATIENT_XYZ), size,
                                                      sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                                                      TRAINING_PATIENT_XYZ, image.GetDirection(), -1024.0), []),
            "body_minus_50hu": lambda: (body_shifted(image, HU_SHIFT), []),
            "z_extended": lambda: (z_extended(image, TRAINING_CROP_Z_MM), [])}
    return {name: make[name]() for name in names}


def median_hu(image: sitk.Image, structures: sitk.Image) -> dict:
    values, truth = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(structures)
    return {name: float(np.median(values[truth == label])) for name, label in (("liver", 1), ("spleen", 2))}


def scores(prediction: str, structures: sitk.Image, own: int, other: int) -> tuple:
    # predictions of the 3 mm input are scored on b's own grid (nearest neighbour)
    predicted = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(prediction), structures, sitk.Transform(),
                                                     sitk.sitkNearestNeighbor, 0)) > 0
    truth = sitk.GetArrayFromImage(structures)
    dice = 2 * (predicted & (truth == own)).sum() / max(1, predicted.sum() + (truth == own).sum())
    return float(dice), float((predicted & (truth == other)).sum() / max(1, (truth == other).sum()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the --workdir of benchmarks/real_anatomy.py")
    parser.add_argument("--trainer", default="UniSegTrainerTaskHeads_cpuDemo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patient", choices=("a", "b"), default="b",
                        help="b: the second patient (default); a: the training patient's held-out crop (3 mm)")
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS), help="default: all")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    root = os.path.abspath(args.workdir)
    raw, work = os.path.join(root, "raw"), os.path.join(root, "resolution", args.trainer, args.patient)
    predict = os.path.join(os.path.dirname(sys.executable), "nnUNetv2_universal_predict")
    runs, hu = {}, {}
    for task, (member, prefix, own, other) in MEMBERS.items():
        case = f"{prefix}_{args.patient}_000"
        for patient in ("a", "b"):  # both patients' organ intensities, whichever is predicted
            hu[f"{prefix}_{patient}_000"] = median_hu(*(sitk.ReadImage(os.path.join(
                raw, member, folder, f"{prefix}_{patient}_000{suffix}.nii.gz")) for folder, suffix in
                (("imagesTs", "_0000"), ("structuresTs", ""))))
        structures = sitk.ReadImage(os.path.join(raw, member, "structuresTs", f"{case}.nii.gz"))
        image = sitk.ReadImage(os.path.join(raw, member, "imagesTs", f"{case}_0000.nii.gz"))
        for name, (image, flags) in inputs(image, args.inputs).items():
            folder = os.path.join(work, "inputs", task, name)
            os.makedirs(folder, exist_ok=True)
            sitk.WriteImage(image, os.path.join(folder, f"{case}_0000.nii.gz"))
            for seed in args.seeds:
                out = os.path.join(work, f"seed{seed}", task, name)
                env = dict(os.environ, nnUNet_raw=raw, nnUNet_preprocessed=os.path.join(root, "pre"),
                           nnUNet_results=os.path.join(root, "results", f"seed{seed}"))
                subprocess.run([predict, "-i", folder, "-o", out, "-d", "910", "-tr", args.trainer, "-p",
                                "UniSegPlansCPUDemo", "-f", "0", "--task", task, "-device", "cpu", "-npp", "0",
                                "-nps", "0", "--disable_progress_bar", "--overwrite", *flags], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                dice, cross = scores(os.path.join(out, f"{case}.nii.gz"), structures, own, other)
                runs.setdefault(task, {}).setdefault(name, []).append(
                    {"seed": seed, "dice": round(dice, 4), "cross_activation": round(cross, 4)})
                print(f"{task} {name} seed {seed}: Dice {dice:.3f}, cross-activation {cross:.3f}", flush=True)
    summary = {task: {name: {"median_dice": statistics.median(r["dice"] for r in rs),
                             "median_cross_activation": statistics.median(r["cross_activation"] for r in rs)}
                      for name, rs in per_input.items()} for task, per_input in runs.items()}
    result = {"trainer": args.trainer, "patient": args.patient, "seeds": args.seeds, "median_hu": hu,
              "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
