"""The real-CT figure of the docs: a model trained by benchmarks/real_anatomy.py segments the second patient (read
from DICOM, stored in another orientation than the training patient) with --all-tasks, reoriented and as stored.

    python benchmarks/real_anatomy_figure.py --workdir DIR --trainer UniSegTrainerTaskHeads_cpuDemo --seed 0 \
        --out docs/images/real_ct_second_patient.png
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the --workdir of benchmarks/real_anatomy.py")
    parser.add_argument("--trainer", default="UniSegTrainerTaskHeads_cpuDemo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    root = os.path.abspath(args.workdir)
    raw = os.path.join(root, "raw")
    member = os.path.join(raw, "Dataset511_RealLiverCT")
    case = "realliverct_b_000"
    images = os.path.join(root, "figure_inputs")
    os.makedirs(images, exist_ok=True)
    src = os.path.join(member, "imagesTs", f"{case}_0000.nii.gz")
    link = os.path.join(images, f"{case}_0000.nii.gz")
    if not os.path.exists(link):
        os.symlink(src, link)
    env = dict(os.environ, nnUNet_raw=raw, nnUNet_preprocessed=os.path.join(root, "pre"),
               nnUNet_results=os.path.join(root, "results", f"seed{args.seed}"))
    # benchmark runs are classes made on the fly: predict with the trainer the run's checkpoint names
    model = ["-d", "910", "-tr", args.trainer, "-p", "UniSegPlansCPUDemo", "-f", "0", "-device", "cpu",
             "-npp", "0", "-nps", "0", "--disable_progress_bar"]
    outputs = {}
    for key, extra in (("reoriented", []), ("as stored", ["--no_reorient"])):
        out = os.path.join(root, "figure_" + key.replace(" ", "_"))
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "nnUNetv2_universal_predict"), "-i", images,
                        "-o", out, "--all-tasks", *model, *extra], env=env, check=True, stdout=subprocess.DEVNULL)
        outputs[key] = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out, f"{case}.nii.gz")))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(src))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(member, "structuresTs", f"{case}.nii.gz")))
    z = int(np.argmax((truth > 0).sum((1, 2))))
    colours = {1: (0.9, 0.3, 0.2), 2: (0.2, 0.5, 0.95)}  # liver, spleen (global labels of --all-tasks: 1, 2)
    panels = [("CT (second patient, DICOM, stored LPS)", None), ("TotalSegmentator: liver, spleen", truth),
              ("--all-tasks, reoriented (default)", outputs["reoriented"]),
              ("--all-tasks, as stored (--no_reorient)", outputs["as stored"])]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (title, labels) in zip(axes, panels):
        ax.imshow(np.clip(ct[z], -200, 300), cmap="gray")
        if labels is not None:
            overlay = np.zeros((*labels[z].shape, 4))
            for value, colour in colours.items():
                overlay[labels[z] == value] = (*colour, 0.55)
            ax.imshow(overlay)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{args.trainer}, seed {args.seed}: red liver task, blue spleen task (trained on one other patient)",
                 fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
