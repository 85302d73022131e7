"""nnUNetv2_universal_evaluate_echo: the paper's Table 2 from predicted masks.

Dice at annotated frames only (the reference's frames that are not ignore, i.e. ED and ES), computed per frame and
averaged over all annotated frames of a group (view, or view and dataset). Classes a case's dataset does not
annotate are skipped (EchoNet: LV_endo only). LVepi is reported two ways: as the myocardium band (label 2 alone,
which is what the paper's 88.3-88.8 matches) and as the area inside the epicardium (labels 1 + 2, CAMUS
convention). With the `views.csv` written by nnUNetv2_universal_predict_echo the view accuracy of the selected
prompt keys is added.
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from typing import Dict, List, Mapping, Optional

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.echo.metadata import EchoMetadata

IGNORE = 3
PAPER_TABLE2 = {("A2C", None): {"LV_endo": 93.2, "LV_epi_band": 88.8}, ("A4C", None): {"LV_endo": 88.5,
                "LV_epi_band": 88.3}, ("PSAX", None): {"LV_endo": 89.4}, ("A4C", "CAMUS"): {"LV_endo": 93.7},
                ("A4C", "EchoNetPediatric"): {"LV_endo": 85.3}, ("A4C", "EchoNetDynamic"): {"LV_endo": 86.6}}
METRICS = ("LV_endo", "LV_epi_band", "LV_epi_region")


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    denominator = prediction.sum() + reference.sum()
    return 1.0 if denominator == 0 else float(2 * np.logical_and(prediction, reference).sum() / denominator)


def case_frame_dice(prediction: np.ndarray, reference: np.ndarray, annotated_classes) -> Dict[str, List[float]]:
    """Per annotated frame: Dice of LV_endo (label 1), LV_epi band (label 2) and LV_epi region (1 + 2)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the reference's {reference.shape}")
    out = defaultdict(list)
    for t in range(reference.shape[0]):
        ref = reference[t]
        if (ref == IGNORE).all():
            continue
        pred = prediction[t]
        if "LV_endo" in annotated_classes:
            out["LV_endo"].append(_dice(pred == 1, ref == 1))
        if "LV_epi" in annotated_classes:
            out["LV_epi_band"].append(_dice(pred == 2, ref == 2))
            out["LV_epi_region"].append(_dice(np.isin(pred, (1, 2)), np.isin(ref, (1, 2))))
    return out


def evaluate_echo(prediction_folder: str, reference_folder: str, dataset_json: Mapping,
                  views_csv: Optional[str] = None) -> dict:
    metadata = EchoMetadata(dataset_json)
    ending = dataset_json["file_ending"]
    cases = sorted(f[:-len(ending)] for f in os.listdir(prediction_folder) if f.endswith(ending)
                   and not f.endswith("_masks" + ending))
    if not cases:
        raise ValueError(f"no predictions (*{ending}) in {prediction_folder}")
    groups: Dict[tuple, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        ref_file = join(reference_folder, case + ending)
        if not isfile(ref_file):
            raise FileNotFoundError(f"case {case}: no reference {ref_file}")
        meta = metadata.case(case)
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(join(prediction_folder, case + ending)))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(ref_file))
        for metric, values in case_frame_dice(prediction, reference, meta["annotated_classes"]).items():
            for key in ((meta["view"], None), (meta["view"], meta["dataset"])):
                groups[key][metric] += values
    table = {}
    for (view, dataset), metrics in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        table[f"{view}/{dataset or 'all'}"] = {m: {"dice": 100 * float(np.mean(v)), "frames": len(v)}
                                               for m, v in metrics.items()}
    result = {"cases": len(cases), "table2": table}
    if views_csv and isfile(views_csv):
        with open(views_csv) as f:
            voted = {row["case"]: row["voted_view"] for row in csv.DictReader(f)}
        known = [c for c in cases if c in voted]
        correct = sum(voted[c] == metadata.case(c)["view"] for c in known)
        result["view_accuracy"] = {"accuracy": correct / len(known) if known else float("nan"), "cases": len(known)}
    return result


def format_table(result: dict) -> str:
    lines = ["| view / dataset | LVendo Dice | LVepi Dice (band) | LVepi Dice (region) | frames "
             "| paper (LVendo / LVepi) |",
             "|---|---|---|---|---|---|"]
    for group, metrics in result["table2"].items():
        view, dataset = group.split("/")
        paper = PAPER_TABLE2.get((view, None if dataset == "all" else dataset), {})
        cells = [f"{metrics[m]['dice']:.1f}" if m in metrics else "-" for m in METRICS]
        frames = max(v["frames"] for v in metrics.values())
        paper_cell = " / ".join(str(paper[m]) for m in ("LV_endo", "LV_epi_band") if m in paper) or "-"
        lines.append(f"| {group} | {' | '.join(cells)} | {frames} | {paper_cell} |")
    if "view_accuracy" in result:
        va = result["view_accuracy"]
        lines.append(f"\nView accuracy of the selected prompt keys: {100 * va['accuracy']:.1f} % ({va['cases']} cases)")
    return "\n".join(lines)


@console_command
def main(argv=None):
    parser = command_parser(description="Dice per view and dataset at annotated frames (paper Table 2) "
                                        "and the prompt pool's view accuracy.")
    parser.add_argument("-d", required=True, help="echo dataset id or name (for its dataset.json metadata)")
    parser.add_argument("-pred", required=True, help="folder of predicted CASE.nii.gz (and views.csv)")
    parser.add_argument("-ref", default=None, help="reference labels (default: nnUNet_raw/<dataset>/labelsTs)")
    parser.add_argument("-o", default=None, help="summary JSON (default: <pred>/summary_echo.json)")
    args = parser.parse_args(argv)
    name = maybe_convert_to_dataset_name(args.d)
    dataset_json = load_json(join(nnUNet_raw, name, "dataset.json"))
    reference = args.ref or join(nnUNet_raw, name, "labelsTs")
    result = evaluate_echo(args.pred, reference, dataset_json, join(args.pred, "views.csv"))
    save_json(result, args.o or join(args.pred, "summary_echo.json"), sort_keys=False)
    print(format_table(result))


if __name__ == "__main__":
    main()
