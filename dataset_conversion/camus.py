"""CAMUS (Leclerc et al., IEEE TMI 2019) -> nnU-Net raw Dataset630_CAMUS: one 16-frame 224x224 clip per patient
and view (A2C, A4C), ED first, LV cavity (1) and myocardium (2) at ED and ES, everything else ignore (3).

Both releases are accepted (pass the release folder or its parent as -i):

NIfTI re-release::

    CAMUS_public/database_nifti/patient0001/patient0001_2CH_half_sequence.nii.gz      (T, H, W) ED -> ES
                                            patient0001_2CH_half_sequence_gt.nii.gz   labels per frame
                                            patient0001_2CH_ED.nii.gz, _ED_gt, _ES, _ES_gt, Info_2CH.cfg (and 4CH)
    CAMUS_public/database_split/subgroup_training.txt, subgroup_validation.txt, subgroup_testing.txt

2019 challenge release (MHD/RAW)::

    training/patient0001/patient0001_2CH_sequence.mhd (+ .raw), _ED_gt.mhd, _ES_gt.mhd, Info_2CH.cfg (and 4CH)
    testing/patient0451/... (no _gt files)

Labels: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium -> 0. Info_*.cfg lines `key: value`; ED/ES are
1-based frame numbers. The clip samples 16 frames from ED to ES (a sequence stored ES -> ED is reversed). Only ED
and ES carry labels: the in-between frames of half_sequence_gt are interpolated, not expert tracings, and become
ignore unless --dense_camus_labels. Splits: database_split (train/val in imagesTr, test in imagesTs/labelsTs); the
MHD release has no split files: a seeded patient-level 90/10 split of training/, testing/ goes to imagesTs
(unlabelled). Both views of a patient always share a split.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.dataset_conversion.echo_toolkit import (build_clip, case_metadata, finish_echo_dataset,
                                                                sample_indices, write_clip)
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, listdir_visible,
                                                           raw_root, require_nonempty, run_cases, seeded_split,
                                                           staged_dataset)

DEFAULT_ID = 630
NAME = "CAMUS"
VIEWS = {"2CH": "A2C", "4CH": "A4C"}
CLASSES = ["LV_epi", "LV_endo"]
_PATIENT = re.compile(r"^patient\d{4}$")
DESCRIPTION = "CAMUS apical two- and four-chamber echocardiography, 16-frame ED->ES clips, LV cavity and myocardium."
REFERENCE = "Leclerc et al., IEEE TMI 38(9):2198-2210, 2019; https://humanheart-project.creatis.insa-lyon.fr"


def read_cfg(path: str, case: str) -> Dict[str, str]:
    if not os.path.isfile(path):
        raise ConversionError(f"case {case}: {path} is missing")
    entries = {}
    with open(path) as f:
        for line in f:
            if ":" in line:
                key, value = line.split(":", 1)
                entries[key.strip()] = value.strip()
    for key in ("ED", "ES"):
        if not entries.get(key, "").isdigit():
            raise ConversionError(f"case {case}: {path} has no integer '{key}'")
    return entries


def _array(path: str, case: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ConversionError(f"case {case}: {path} is missing")
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError as e:
        raise ConversionError(f"case {case}: cannot read {path} ({str(e).strip().splitlines()[-1]})") from None


def _labels(array: np.ndarray, case: str, path: str) -> np.ndarray:
    array = np.asarray(array).reshape(array.shape[-2:]) if array.ndim == 3 and array.shape[0] == 1 else array
    bad = sorted(set(np.unique(array).tolist()) - {0, 1, 2, 3})
    if bad:
        raise ConversionError(f"case {case}: {path} has label values {bad} (expected 0-3)")
    out = array.astype(np.uint8)
    out[out == 3] = 0  # left atrium is not a class of the model
    return out


def find_release(source: str) -> Tuple[str, str]:
    """('nifti', CAMUS_public folder) or ('mhd', folder holding training/)."""
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    for folder in (source, join(source, "CAMUS_public")):
        if os.path.isdir(join(folder, "database_nifti")):
            return "nifti", folder
    for folder in (source, join(source, "CAMUS")):
        if os.path.isdir(join(folder, "training")):
            return "mhd", folder
    raise ConversionError(f"{source}: expected CAMUS_public/database_nifti/ (NIfTI release) or training/ (2019 MHD "
                          f"release)")


def _split_lists(root: str) -> Dict[str, str]:
    split_dir = join(root, "database_split")
    splits = {}
    for part, file in (("train", "subgroup_training.txt"), ("val", "subgroup_validation.txt"),
                       ("test", "subgroup_testing.txt")):
        path = join(split_dir, file)
        if not os.path.isfile(path):
            raise ConversionError(f"{path} is missing (the official split)")
        for line in open(path):
            if line.strip():
                splits[line.strip()] = part
    return splits


def convert_view(folder: str, release: str, patient_dir: str, patient: str, view: str, split: str,
                 dense: bool) -> Tuple[str, dict]:
    case = f"CAMUS_{patient}_{VIEWS[view]}"
    prefix = join(patient_dir, f"{patient}_{view}")
    cfg = read_cfg(join(patient_dir, f"Info_{view}.cfg"), case)
    ed, es = int(cfg["ED"]) - 1, int(cfg["ES"]) - 1
    labelled = release == "nifti" or split != "test"
    if release == "nifti":
        frames = _array(f"{prefix}_half_sequence.nii.gz", case)
        # the half sequence spans ED..ES in file order; positions of ED and ES inside it
        ed_pos, es_pos = (0, len(frames) - 1) if ed <= es else (len(frames) - 1, 0)
        gt_file = f"{prefix}_half_sequence_gt.nii.gz"
        dense_gt = _array(gt_file, case) if dense else None
        ed_gt, es_gt = f"{prefix}_ED_gt.nii.gz", f"{prefix}_ES_gt.nii.gz"
    else:
        frames = _array(f"{prefix}_sequence.mhd", case)
        ed_pos, es_pos = ed, es
        dense_gt, ed_gt, es_gt = None, f"{prefix}_ED_gt.mhd", f"{prefix}_ES_gt.mhd"
    masks: Dict[int, np.ndarray] = {}
    if labelled:
        masks = {ed_pos: _labels(_array(ed_gt, case), case, ed_gt), es_pos: _labels(_array(es_gt, case), case, es_gt)}
        for pos, mask in masks.items():
            if mask.shape != frames.shape[1:]:
                raise ConversionError(f"case {case}: label shape {mask.shape} differs from the frames' "
                                      f"{frames.shape[1:]}")
        if dense_gt is not None:
            for pos in range(len(dense_gt)):
                masks.setdefault(pos, _labels(dense_gt[pos], case, gt_file))
    indices, reversed_ = sample_indices(ed_pos, es_pos)
    image, label, annotated = build_clip(frames, masks, indices, case)
    write_clip(folder, case, image, label if labelled else None, split == "test")
    return case, case_metadata(NAME, VIEWS[view], CLASSES, annotated, indices, es_pos, reversed_, split)


def find_patients(release: str, root: str) -> List[Tuple[str, str, str]]:
    """(patient folder, patient id, split) for every patient."""
    if release == "nifti":
        splits = _split_lists(root)
        base = join(root, "database_nifti")
        patients = [p for p in listdir_visible(base) if _PATIENT.match(p)]
        require_nonempty(patients, f"patient folders in {base}")
        missing = sorted(set(patients) - set(splits))
        if missing:
            raise ConversionError(f"case {missing[0]}: not listed in database_split")
        return [(join(base, p), p, splits[p]) for p in patients]
    train_dir = join(root, "training")
    training = [p for p in listdir_visible(train_dir) if _PATIENT.match(p)]
    require_nonempty(training, f"patient folders in {train_dir}")
    train, val = seeded_split(training, 0.9)
    out = [(join(train_dir, p), p, "train" if p in train else "val") for p in training]
    test_dir = join(root, "testing")
    if os.path.isdir(test_dir):
        out += [(join(test_dir, p), p, "test") for p in listdir_visible(test_dir) if _PATIENT.match(p)]
    return out


def convert_camus(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                  dense_labels: bool = False) -> str:
    release, root = find_release(source)
    patients = find_patients(release, root)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        jobs = [(folder, release, d, p, v, s, dense_labels) for d, p, s in patients for v in VIEWS]
        metadata = dict(run_cases(convert_view, jobs, num_processes, "CAMUS"))
        parts = {part: sorted(c for c, m in metadata.items() if m["split"] == part) for part in ("train", "val")}
        if release == "mhd":
            print(f"CAMUS 2019 release has no split files: seeded patient-level 90/10 split "
                  f"({len(parts['train'])} / {len(parts['val'])} clips)")
        finish_echo_dataset(folder, NAME, metadata, [parts], DESCRIPTION, REFERENCE)
    return f"Dataset{int(dataset_id):03d}_{NAME}"


def main(argv: Optional[list] = None) -> None:
    parser = converter_parser("Convert CAMUS (NIfTI CAMUS_public or the 2019 MHD release) into 16-frame echo clips "
                              f"(Dataset{DEFAULT_ID}_{NAME}).", DEFAULT_ID)
    parser.add_argument("--dense_camus_labels", action="store_true",
                        help="keep the interpolated labels of in-between frames (default: ignore)")
    args = parser.parse_args(argv)
    name = convert_camus(args.i, args.d, args.np, args.overwrite, args.dense_camus_labels)
    print(f"wrote {join(raw_root(), name)}")


if __name__ == "__main__":
    main()
