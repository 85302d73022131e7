"""StructSeg 2019 (MICCAI 2019 Automatic Structure Segmentation for Radiotherapy Planning) -> nnU-Net raw
Dataset650_StructSegHaNOAR (22 head-and-neck organs at risk), Dataset651_StructSegNasoGTV (nasopharynx gross tumour
volume) and Dataset652_StructSegThoracicOAR (6 thoracic organs at risk). Hermes uses all three.

Expected layout (pass the folder holding the task folders as -i; `--task` picks some)::

    HaN_OAR/1/data.nii.gz   HaN_OAR/1/label.nii.gz     ... 50 cases
    Naso_GTV/1/data.nii.gz  Naso_GTV/1/label.nii.gz    (the same CTs as HaN_OAR)
    Thoracic_OAR/1/data.nii.gz  Thoracic_OAR/1/label.nii.gz

Labels (kept): H&N 1 brainstem, 2 eye L, 3 eye R, 4 lens L, 5 lens R, 6 optic nerve L, 7 optic nerve R, 8 chiasm,
9 temporal lobe L, 10 temporal lobe R, 11 pituitary, 12 parotid L, 13 parotid R, 14 inner ear L, 15 inner ear R,
16 middle ear L, 17 middle ear R, 18 TMJ L, 19 TMJ R, 20 spinal cord, 21 mandible L, 22 mandible R; Naso 1 GTV;
thoracic 1 lung L, 2 lung R, 3 spinal cord, 4 esophagus, 5 heart, 6 trachea. CT. Case ids structseg_<task>_<i>.
Split: seeded 80/20 per task (HaN and Naso use the same CTs: the same seed gives both the same split).
"""
from __future__ import annotations

import os
from typing import Dict, List

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.toolkit import (all_or_nothing, case_number, ConversionError, convert_cases,
                                                           converter_parser, listdir_visible, raw_root, seeded_split,
                                                           task_entry)

HAN = ["brainstem", "eye_left", "eye_right", "lens_left", "lens_right", "optic_nerve_left", "optic_nerve_right",
       "chiasm", "temporal_lobe_left", "temporal_lobe_right", "pituitary", "parotid_left", "parotid_right",
       "inner_ear_left", "inner_ear_right", "middle_ear_left", "middle_ear_right", "tmj_left", "tmj_right",
       "spinal_cord", "mandible_left", "mandible_right"]
THORACIC = ["lung_left", "lung_right", "spinal_cord", "esophagus", "heart", "trachea"]
TASKS: Dict[str, dict] = {
    "han_oar": {"folder": "HaN_OAR", "id": 650, "name": "StructSegHaNOAR", "prefix": "structseg_han_",
                "hermes_sampling_weight": 2.6,  # Hermes' reference sampler, per case
                "organs": HAN, "description": "Head-and-neck CT with 22 organs at risk (StructSeg 2019 task 1)."},
    "naso_gtv": {"folder": "Naso_GTV", "id": 651, "name": "StructSegNasoGTV", "prefix": "structseg_naso_",
                 "organs": ["gtv"],
                 "description": "Head-and-neck CT, nasopharynx GTV (StructSeg 2019 task 2)."},
    "thoracic_oar": {"folder": "Thoracic_OAR", "id": 652, "name": "StructSegThoracicOAR",
                     "hermes_sampling_weight": 0.7,
                     "prefix": "structseg_thorax_", "organs": THORACIC,
                     "description": "Thoracic CT with 6 organs at risk (StructSeg 2019 task 3)."},
}
REFERENCE = "StructSeg 2019, https://structseg2019.grand-challenge.org"


def convert_task(source: str, key: str, dataset_id: int, num_processes: int, overwrite: bool) -> str:
    spec = TASKS[key]
    folder = join(source, spec["folder"])
    cases = []
    for sub in listdir_visible(folder):
        if not sub.isdigit():
            continue
        case = f"{spec['prefix']}{int(sub)}"
        for f in ("data.nii.gz", "label.nii.gz"):
            if not os.path.isfile(join(folder, sub, f)):
                raise ConversionError(f"case {case}: {join(folder, sub, f)} is missing")
        cases.append((case, join(folder, sub, "data.nii.gz"), join(folder, sub, "label.nii.gz")))
    labels = {"background": 0, **{o: i + 1 for i, o in enumerate(spec["organs"])}}
    train, val = seeded_split([c[0] for c in cases])
    splits = [{"train": sorted(train, key=case_number), "val": sorted(val, key=case_number)}]
    task = task_entry(spec["name"], {"0": "CT"}, labels, spec["description"],
                      sampling_weight=spec.get("hermes_sampling_weight"))
    return convert_cases(sorted(cases, key=lambda c: case_number(c[0])), dataset_id, spec["name"], labels,
                         {i: i for i in range(len(labels))}, task, spec["description"], num_processes, overwrite,
                         reference=REFERENCE, splits=splits)


def convert_structseg(source: str, tasks: List[str] = None, num_processes: int = 1, overwrite: bool = False,
                      dataset_ids: Dict[str, int] = None) -> List[str]:
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    present = [k for k, s in TASKS.items() if os.path.isdir(join(source, s["folder"]))]
    tasks = tasks or present
    missing = [t for t in tasks if t not in present]
    if not present or missing:
        raise ConversionError(f"{source}: expected task folders {[TASKS[k]['folder'] for k in (missing or TASKS)]}")
    ids = {k: s["id"] for k, s in TASKS.items()} | (dataset_ids or {})
    with all_or_nothing():  # the three tasks come from one download: all three or none
        return [convert_task(source, k, ids[k], num_processes, overwrite) for k in tasks]


@console_command
def main(argv=None) -> None:
    parser = converter_parser("Convert StructSeg 2019 (HaN_OAR, Naso_GTV, Thoracic_OAR) into nnU-Net raw datasets "
                              "650-652.", 650,
                              layout=('the folder holding HaN_OAR/ Naso_GTV/ Thoracic_OAR/, each <n>/data.nii.gz + '
                                      '<n>/label.nii.gz'))
    parser.add_argument("--task", nargs="+", choices=sorted(TASKS), default=None, help="tasks (default: all present)")
    args = parser.parse_args(argv)
    ids = {"han_oar": args.d, "naso_gtv": args.d + 1, "thoracic_oar": args.d + 2}
    for folder in convert_structseg(args.i, args.task, args.np, args.overwrite, ids):
        print(f"wrote {join(raw_root(), folder)}")


if __name__ == "__main__":
    main()
