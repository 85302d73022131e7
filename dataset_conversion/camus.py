"""CAMUS (Leclerc et al., IEEE TMI 2019) -> nnU-Net raw Dataset630_CAMUS (default id 630, name "CAMUS"): one
16-frame 224x224 clip per patient and view (2CH -> A2C, 4CH -> A4C), ED first, LV cavity (1) and myocardium (2) at
ED and ES, every other frame ignore (3). Case ids CAMUS_patient0001_A2C, CAMUS_patient0001_A4C.

Both releases are accepted; pass the release folder or its parent as -i.

NIfTI re-release (CAMUS_public)::

    CAMUS_public/database_nifti/patient0001/patient0001_2CH_half_sequence.nii.gz     (T, H, W), ED -> ES
                                            patient0001_2CH_half_sequence_gt.nii.gz  a label map per frame
                                            patient0001_2CH_ED.nii.gz, _ED_gt, _ES, _ES_gt (and the same for 4CH)
                                            Info_2CH.cfg, Info_4CH.cfg
    CAMUS_public/database_split/subgroup_training.txt, subgroup_validation.txt, subgroup_testing.txt

2019 challenge release (MHD/RAW)::

    training/patient0001/patient0001_2CH_sequence.mhd (+ .raw)     the full sequence, no labels
                         patient0001_2CH_ED_gt.mhd, _ES_gt.mhd      (and _ED.mhd, _ES.mhd, 4CH, Info_*.cfg)
    testing/patient0451/...                                          no _gt files
    database_split/subgroup_*.txt                                    optional (not part of the 2019 download)

Info_*.cfg: `key: value` lines, parsed generically; ED and ES are 1-based frame numbers of the stored sequence
(the half sequence in the NIfTI release, where they are 1 and NbFrame, or NbFrame and 1 for a sequence stored
ES -> ED). The ED mask (`*_ED_gt`) belongs to frame ED-1, the ES mask to frame ES-1 (0-based); a frame number
outside the sequence is an error naming the case.

Labels: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium -> 0; other values are an error. Temporal sampling:
round(linspace(ED-1, ES-1, 16)) in file order, reversed when ED > ES (`"reversed": true`), which for the NIfTI
release is round(linspace(0, N-1, 16)) over the half sequence. Only ED and ES carry labels: the in-between frames
of half_sequence_gt are interpolated, not expert tracings, and become ignore unless --dense_camus_labels (then
every sampled frame takes its half_sequence_gt map; NIfTI release only). Frames are resized to 224 x 224
(bilinear images, nearest labels), ignoring CAMUS' anisotropic pixel spacing.

Splits (patient level; both views of a patient always share one). `--split paper` (default, the echo paper's
Table 1): 450 training and 50 test patients per view: the database_split lists' training + validation patients (or
training/ of the 2019 release) are training clips in 5 patient-level folds, the test patients (testing/) go to
imagesTs. `--split official`: the database_split lists (train, val in imagesTr; test in imagesTs + labelsTs); the
2019 release without split files: a seeded patient-level 90/10 train/val split of training/ (toolkit.seeded_split,
seed 1234, at least one val patient; a message says so). testing/ of the 2019 release -> imagesTs without labels
(echo_case_metadata split "test", annotated_frames []).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.cli import console_command
from nnunetv2_universal.dataset_conversion.echo_toolkit import (CAVITY_AND_WALL, SPLIT_MODES, add_split_argument,
                                                                build_clip, case_metadata, finish_echo_dataset,
                                                                paper_split, sample_indices, write_clip)
from nnunetv2_universal.dataset_conversion.toolkit import (ConversionError, converter_parser, dataset_name,
                                                           listdir_visible, raw_root, read_image, require_nonempty,
                                                           run_cases, seeded_split, staged_dataset)

DEFAULT_ID = 630
NAME = "CAMUS"
VIEWS = {"2CH": "A2C", "4CH": "A4C"}
LEFT_ATRIUM = 3
PATIENT = re.compile(r"^patient\d{4}$")
SPLIT_FILES = {"train": "subgroup_training.txt", "val": "subgroup_validation.txt", "test": "subgroup_testing.txt"}
DESCRIPTION = "CAMUS apical two- and four-chamber echocardiography, 16-frame ED->ES clips, LV cavity and myocardium."
REFERENCE = "Leclerc et al., IEEE TMI 38(9):2198-2210, 2019; https://humanheart-project.creatis.insa-lyon.fr"


def read_cfg(path: str, case: str) -> Dict[str, str]:
    """Info_*.cfg as {key: value} (every `key: value` line); ED and ES must be positive integers."""
    if not os.path.isfile(path):
        raise ConversionError(f"case {case}: {path} is missing")
    entries = {}
    with open(path) as f:
        for line in f:
            if ":" in line:
                key, value = line.split(":", 1)
                entries[key.strip()] = value.strip()
    for key in ("ED", "ES"):
        if not entries.get(key, "").isdigit() or int(entries[key]) < 1:
            raise ConversionError(f"case {case}: {path} has no 1-based frame number '{key}' (found "
                                  f"{entries.get(key)!r})")
    return entries


def read_array(path: str, case: str) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(path, case))


def to_model_labels(array: np.ndarray, case: str, path: str) -> np.ndarray:
    """A CAMUS label map (H, W) [or (1, H, W)] -> 0 background, 1 cavity, 2 myocardium (left atrium -> 0)."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    bad = sorted(set(np.unique(array).tolist()) - {0, 1, 2, LEFT_ATRIUM})
    if bad:
        raise ConversionError(f"case {case}: {path} has label values {bad} (expected 0-3)")
    out = array.astype(np.uint8)
    out[out == LEFT_ATRIUM] = 0
    return out


def find_release(source: str) -> Tuple[str, str]:
    """('nifti', the folder holding database_nifti/) or ('mhd', the folder holding training/)."""
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


def read_split_lists(root: str) -> Dict[str, str]:
    """{patient: 'train' | 'val' | 'test'} from database_split/subgroup_*.txt."""
    splits: Dict[str, str] = {}
    for part, file in SPLIT_FILES.items():
        path = join(root, "database_split", file)
        if not os.path.isfile(path):
            raise ConversionError(f"{path} is missing (the official split)")
        with open(path) as f:
            for patient in (line.strip() for line in f):
                if patient and splits.setdefault(patient, part) != part:
                    raise ConversionError(f"case {patient}: listed in both {SPLIT_FILES[splits[patient]]} and {file}")
    return splits


def patients_in(folder: str) -> List[str]:
    return [p for p in listdir_visible(folder) if PATIENT.match(p)]


def find_patients(release: str, root: str, split_mode: str = "paper") -> List[Tuple[str, str, str, bool]]:
    """(patient folder, patient id, split, labelled) for every patient of the release."""
    if split_mode not in SPLIT_MODES:
        raise ValueError(f"split must be one of {SPLIT_MODES}, got {split_mode!r}")
    if split_mode == "paper":
        return [(d, p, paper_split(s), labelled) for d, p, s, labelled in _official_patients(release, root, True)]
    return _official_patients(release, root, False)


def _official_patients(release: str, root: str, quiet: bool) -> List[Tuple[str, str, str, bool]]:
    if release == "nifti":
        base = join(root, "database_nifti")
        patients = require_nonempty(patients_in(base), f"patient folders in {base}")
        splits = read_split_lists(root)
        missing = [p for p in patients if p not in splits]
        if missing:
            raise ConversionError(f"case {missing[0]}: {join(base, missing[0])} is not listed in database_split")
        return [(join(base, p), p, splits[p], True) for p in patients]
    train_dir = join(root, "training")
    training = require_nonempty(patients_in(train_dir), f"patient folders in {train_dir}")
    if os.path.isdir(join(root, "database_split")):
        splits = read_split_lists(root)
        missing = [p for p in training if p not in splits]
        if missing:
            raise ConversionError(f"case {missing[0]}: {join(train_dir, missing[0])} is not listed in database_split")
    else:
        n_val = max(1, int(round(0.1 * len(training)))) if len(training) > 1 else 0
        train, val = seeded_split(training, 1 - n_val / len(training))
        splits = {**{p: "train" for p in train}, **{p: "val" for p in val}}
        if not quiet:
            print(f"{NAME}: the 2019 release has no split files: seeded patient-level 90/10 train/val split of "
                  f"training/ ({len(train)} / {len(val)} patients)")
    out = [(join(train_dir, p), p, splits[p], True) for p in training]
    test_dir = join(root, "testing")
    if os.path.isdir(test_dir):
        out += [(join(test_dir, p), p, "test", False) for p in patients_in(test_dir)]
    return out


def convert_view(folder: str, release: str, patient_dir: str, patient: str, view: str, split: str, labelled: bool,
                 dense: bool) -> Tuple[str, dict]:
    """One patient and view -> one clip; returns (case, echo metadata)."""
    case = f"{NAME}_{patient}_{VIEWS[view]}"
    prefix = join(patient_dir, f"{patient}_{view}")
    cfg_path = join(patient_dir, f"Info_{view}.cfg")
    cfg = read_cfg(cfg_path, case)
    ed, es = int(cfg["ED"]) - 1, int(cfg["ES"]) - 1
    ext = ".nii.gz" if release == "nifti" else ".mhd"
    sequence_path = f"{prefix}_half_sequence{ext}" if release == "nifti" else f"{prefix}_sequence{ext}"
    frames = read_array(sequence_path, case)
    if frames.ndim != 3:
        raise ConversionError(f"case {case}: {sequence_path} has shape {frames.shape}, expected (frames, H, W)")
    if max(ed, es) >= len(frames):
        raise ConversionError(f"case {case}: {cfg_path} gives ED {ed + 1} / ES {es + 1} (1-based) but "
                              f"{sequence_path} has {len(frames)} frames")
    masks: Dict[int, np.ndarray] = {}
    if labelled:
        for position, phase in ((ed, "ED"), (es, "ES")):
            path = f"{prefix}_{phase}_gt{ext}"
            masks[position] = to_model_labels(read_array(path, case), case, path)
    indices, reversed_ = sample_indices(ed, es)
    if labelled and dense:
        if release != "nifti":
            raise ConversionError(f"case {case}: --dense_camus_labels needs the NIfTI release (half_sequence_gt)")
        dense_path = f"{prefix}_half_sequence_gt{ext}"
        dense_gt = read_array(dense_path, case)
        if dense_gt.shape != frames.shape:
            raise ConversionError(f"case {case}: {dense_path} has shape {dense_gt.shape}, {sequence_path} "
                                  f"{frames.shape}")
        for i in set(indices) - set(masks):
            masks[i] = to_model_labels(dense_gt[i], case, dense_path)
    image, label, annotated = build_clip(frames, masks, indices, case, sequence_path)
    write_clip(folder, case, image, label if labelled else None, split == "test")
    return case, case_metadata(NAME, VIEWS[view], CAVITY_AND_WALL, annotated, indices, es, reversed_, split)


def convert_camus(source: str, dataset_id: int = DEFAULT_ID, num_processes: int = 1, overwrite: bool = False,
                  dense_labels: bool = False, split: str = "paper") -> str:
    """Convert either CAMUS release into Dataset<id>_CAMUS in nnUNet_raw; returns the dataset folder name.
    dense_labels keeps the interpolated half_sequence_gt maps of the in-between frames (default: ignore)."""
    release, root = find_release(source)
    patients = find_patients(release, root, split)
    folder_name = dataset_name(dataset_id, NAME)
    with staged_dataset(dataset_id, NAME, overwrite) as folder:
        jobs = [(folder, release, d, p, view, s, labelled, dense_labels)
                for d, p, s, labelled in patients for view in VIEWS]
        metadata = dict(run_cases(convert_view, jobs, num_processes, f"converting {folder_name}"))
        groups = {case: case.split("_")[1] for case in metadata}  # CAMUS_patient0001_A2C -> patient0001
        finish_echo_dataset(folder, folder_name, metadata, DESCRIPTION, REFERENCE, split, groups)
    return folder_name


@console_command
def main(argv: Optional[list] = None) -> None:
    parser = converter_parser(f"Convert CAMUS (NIfTI CAMUS_public or the 2019 MHD release) into 16-frame echo clips "
                              f"(Dataset{DEFAULT_ID}_{NAME}).", DEFAULT_ID,
                              layout=('CAMUS_public/ (database_nifti/patientNNNN/*.nii.gz, database_split/*.txt) or '
                                      'the 2019 MHD release'))
    parser.add_argument("--dense_camus_labels", action="store_true",
                        help="keep the interpolated half_sequence_gt labels of the in-between frames (default: "
                             "ignore; NIfTI release only)")
    add_split_argument(parser)
    args = parser.parse_args(argv)
    name = convert_camus(args.i, args.d, args.np, args.overwrite, dense_labels=args.dense_camus_labels,
                         split=args.split)
    print(f"wrote {join(raw_root(), name)}")


if __name__ == "__main__":
    main()
