"""The small toolkit every converter is written with.

A converter reads one public dataset in its downloaded layout and writes an nnU-Net v2 raw dataset with nnU-Net's
own IO conventions (SimpleITK, `generate_dataset_json`) plus the dataset's task entry (`universal_task`) for the
collection builder. Conversions are atomic: cases are written into a hidden staging folder inside nnUNet_raw, which
is moved into place only when every case succeeded. Errors name the case and the file.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from tqdm import tqdm

from nnunetv2_universal.cli import command_parser
from nnunetv2_universal.image_checks import grid_differences, image_problem, read_checked

FILE_ENDING = ".nii.gz"
CT_CHANNELS = {"0": "CT"}


class ConversionError(RuntimeError):
    """A source case cannot be converted; the message names the case and the file."""


def raw_root() -> str:
    from nnunetv2.paths import nnUNet_raw
    if not nnUNet_raw.is_set():
        raise ConversionError("nnUNet_raw is not set; export nnUNet_raw (and nnUNet_preprocessed, nnUNet_results)")
    return os.fspath(nnUNet_raw)


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


# set while converters that write several datasets (StructSeg, AMOS22, CHAOS) run as one transaction
_deferred_moves: Optional[List[Tuple[str, List[str], str]]] = None


def _move_into_place(staging: str, existing: Sequence[str], target: str) -> None:
    for old in existing:
        shutil.rmtree(old)
    os.replace(staging, target)


@contextmanager
def staged_dataset(dataset_id: int, name: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a staging folder (with imagesTr/labelsTr/imagesTs); move it to nnUNet_raw/DatasetXXX_Name on success.

    An existing dataset with the same id is only replaced with overwrite=True (the CLI's --overwrite). On any
    error the staging folder is removed and nnUNet_raw is left as it was. Inside all_or_nothing() the move waits
    until every dataset of the block succeeded.
    """
    root = raw_root()
    os.makedirs(root, exist_ok=True)
    prefix = f"Dataset{int(dataset_id):03d}_"
    existing = [join(root, d) for d in os.listdir(root) if d.startswith(prefix)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists; re-run with --overwrite to replace it")
    staging = tempfile.mkdtemp(prefix=f".staging_{dataset_name(dataset_id, name)}_", dir=root)
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            os.makedirs(join(staging, sub))
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    move = (staging, existing, join(root, dataset_name(dataset_id, name)))
    if _deferred_moves is not None:
        _deferred_moves.append(move)
        return
    try:
        _move_into_place(*move)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """For converters that write several datasets from one download: the datasets move into nnUNet_raw together
    when the block succeeds; on any error every staging folder is removed and nothing is written."""
    global _deferred_moves
    if _deferred_moves is not None:  # nested: the outer block decides
        yield
        return
    _deferred_moves = []
    try:
        yield
        moves = _deferred_moves
        _deferred_moves = None
        for move in moves:
            _move_into_place(*move)
    finally:
        for staging, _, _ in _deferred_moves or []:
            if os.path.isdir(staging):
                shutil.rmtree(staging)
        _deferred_moves = None


def read_image(path: str, case: str) -> sitk.Image:
    """SimpleITK image of `path`, checked: readable, orthonormal direction, finite intensities."""
    return read_checked(path, case, ConversionError)


def check_image(image: sitk.Image, path: str, case: str) -> None:
    """The checks of read_image on an image read otherwise (a DICOM series)."""
    problem = image_problem(image, path)
    if problem:
        raise ConversionError(f"case {case}: {path} {problem}")


def check_geometry(image: sitk.Image, label: sitk.Image, case: str) -> None:
    """Image and label must share size, spacing, origin and direction (nnU-Net requires aligned grids)."""
    problems = [f"{what} {list(a)} vs {list(b)}" for what, a, b in grid_differences(image, label)]
    if problems:
        raise ConversionError(f"case {case}: image and label geometry differ: " + "; ".join(problems))


def with_geometry(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def remap_labels(label: sitk.Image, mapping: Mapping[int, int], case: str) -> sitk.Image:
    """Map source label values to target values; a value without a mapping is an error naming the case."""
    array = sitk.GetArrayFromImage(label)
    values = np.unique(array)
    unexpected = [int(v) for v in values if int(v) not in mapping]
    if unexpected:
        raise ConversionError(f"case {case}: unexpected label values {unexpected}; expected {sorted(mapping)}")
    lut = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        if src <= values.max():
            lut[src] = dst
    return with_geometry(lut[array.astype(np.int64)], label)


def binarize(label: sitk.Image) -> sitk.Image:
    """Every non-zero value -> 1."""
    return with_geometry((sitk.GetArrayFromImage(label) > 0).astype(np.uint8), label)


def split_channels(image: sitk.Image, case: str, expected: int) -> List[sitk.Image]:
    """A 4D image (or vector image) -> `expected` 3D images with the 3D part of the geometry."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = [sitk.VectorIndexSelectionCast(image, i) for i in range(image.GetNumberOfComponentsPerPixel())]
    elif image.GetDimension() == 4:
        size = list(image.GetSize())
        channels = []
        for i in range(size[3]):
            channels.append(sitk.Extract(image, size[:3] + [0], [0, 0, 0, i]))
    else:
        channels = [image]
    if len(channels) != expected:
        raise ConversionError(f"case {case}: expected {expected} channel(s), found {len(channels)}")
    return channels


def write_case(folder: str, case_id: str, images: Sequence[sitk.Image], label: Optional[sitk.Image],
               split: str = "Tr") -> None:
    """imagesTr/<case>_0000.nii.gz ... and labelsTr/<case>.nii.gz (split 'Ts': imagesTs, label ignored)."""
    for c, image in enumerate(images):
        sitk.WriteImage(image, join(folder, f"images{split}", f"{case_id}_{c:04d}{FILE_ENDING}"), True)
    if label is not None and split == "Tr":
        sitk.WriteImage(label, join(folder, "labelsTr", f"{case_id}{FILE_ENDING}"), True)


def finish_dataset(folder: str, name: str, channels: Mapping[str, str], labels: Mapping[str, int],
                   num_training: int, task: Mapping, description: str, reference: str = "",
                   license: str = "see the dataset's own terms", splits: Optional[List[dict]] = None) -> None:
    """dataset.json via nnU-Net's generate_dataset_json with the task entry; splits_final.json if given
    (nnU-Net's planner copies a raw splits_final.json into nnUNet_preprocessed)."""
    if num_training == 0:
        raise ConversionError(f"{name}: no training cases found")
    from nnunetv2_universal.registry import TaskSpec
    TaskSpec.from_dict({**task, "dataset": name})  # fail before writing if the entry is invalid
    generate_dataset_json(folder, dict(channels), dict(labels), num_training, FILE_ENDING, dataset_name=name,
                          description=description, reference=reference, license=license,
                          converted_by="nnunetv2_universal", universal_task=dict(task))
    if splits is not None:
        save_json(splits, join(folder, "splits_final.json"), sort_keys=False)


def run_cases(function: Callable, jobs: Sequence[tuple], num_processes: int, description: str) -> List:
    """Run function(*job) for every job with a progress bar, in worker processes if num_processes > 1."""
    results = []
    with tqdm(total=len(jobs), desc=description) as bar:
        if num_processes <= 1:
            for job in jobs:
                results.append(function(*job))
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                for result in pool.starmap(function, jobs, chunksize=1):
                    results.append(result)
                    bar.update()
    return results


def listdir_visible(folder: str) -> List[str]:
    """Sorted entries without hidden/macOS resource files ('.', '._')."""
    if not os.path.isdir(folder):
        raise ConversionError(f"folder {folder} does not exist")
    return sorted(f for f in os.listdir(folder) if not f.startswith("."))


def require_nonempty(items: Iterable, what: str) -> list:
    items = list(items)
    if not items:
        raise ConversionError(f"no {what} found")
    return items


def converter_parser(description: str, default_id: int, layout: str) -> argparse.ArgumentParser:
    """nnU-Net's converter idiom: -i SOURCE -d ID [-np N] [--overwrite]; `layout`: the expected top-level layout
    in one line (the module docstring has it in full)."""
    p = command_parser(description=description)
    p.add_argument("-i", required=True, help=f"the dataset as downloaded: {layout}")
    p.add_argument("-d", type=int, default=default_id, help=f"nnU-Net dataset id (default {default_id})")
    p.add_argument("-np", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")
    return p


def seeded_split(case_ids: Sequence[str], train_fraction: float = 0.8, seed: int = 1234) -> Tuple[list, list]:
    """Deterministic shuffle-then-cut split (one fold)."""
    ids = sorted(case_ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    cut = int(round(len(ids) * train_fraction))
    return sorted(ids[i] for i in order[:cut]), sorted(ids[i] for i in order[cut:])


def grouped_folds(groups: Mapping[str, str], n_folds: int = 5, seed: int = 12345) -> List[dict]:
    """n folds over cases such that all cases of one group (patient, subject) fall in the same fold."""
    group_ids = sorted(set(groups.values()))
    rng = np.random.default_rng(seed)
    shuffled = [group_ids[i] for i in rng.permutation(len(group_ids))]
    fold_of_group = {g: i % n_folds for i, g in enumerate(shuffled)}
    folds = []
    for f in range(n_folds):
        val = sorted(c for c, g in groups.items() if fold_of_group[g] == f)
        train = sorted(c for c, g in groups.items() if fold_of_group[g] != f)
        folds.append({"train": train, "val": val})
    return folds


def task_entry(name: str, channels: Mapping[str, str], labels: Mapping[str, int], description: str,
               spacing: Optional[Sequence[float]] = None, normalization: Optional[Sequence[str]] = None,
               structures: Optional[Mapping[str, str]] = None, prior_modality: Optional[str] = None,
               sampling_weight: Optional[float] = None) -> Dict:
    """The registry entry the collection builder reads (see nnunetv2_universal.registry.TaskSpec)."""
    entry = {"name": name, "channels": dict(channels), "labels": dict(labels), "description": description}
    if structures:
        entry["structures"] = dict(structures)
    if prior_modality is not None:
        entry["prior_modality"] = prior_modality
    if sampling_weight is not None:  # Hermes' reference weight per case of this dataset
        entry["sampling_weight"] = float(sampling_weight)
    if spacing is not None:
        entry["spacing"] = [float(s) for s in spacing]
    if normalization is not None:
        entry["normalization"] = list(normalization)
    return entry


# ------------------------------------------------------------------- single-channel labelled volumes (CT sets)
# (case id, image path, label path or None for a test image)
Case = Tuple[str, str, Optional[str]]


def case_number(case_id: str) -> Tuple[str, int]:
    """Natural sort key for `<name>_<int>` ids (liver_2 before liver_10)."""
    stem, _, number = case_id.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (case_id, -1)


def read_3d(path: str, case: str) -> sitk.Image:
    """read_image, and the image must be a 3D scalar volume."""
    image = read_image(path, case)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"case {case}: {path} is not a 3D single-channel volume (dimension "
                              f"{image.GetDimension()}, {image.GetNumberOfComponentsPerPixel()} component(s))")
    return image


def _require_integer_values(label: sitk.Image, case: str, path: str) -> None:
    if label.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(label)
        if not np.array_equal(array, np.round(array)):
            raise ConversionError(f"case {case}: label file {path} holds non-integer values")


def slice_axis_order(image: sitk.Image) -> Optional[List[int]]:
    """The axis permutation that makes the axis with the largest spacing SimpleITK axis 2 (the first axis of
    nnU-Net's arrays), or None if axis 2 already has the largest spacing."""
    spacing = image.GetSpacing()
    if spacing[2] >= max(spacing) * (1 - 1e-6):
        return None
    slice_axis = int(np.argmax(spacing))
    return [a for a in range(3) if a != slice_axis] + [slice_axis]


def reorder_slice_axis_first(image: sitk.Image, order: Optional[Sequence[int]] = None) -> sitk.Image:
    """Permute voxel axes losslessly (physical position of every voxel unchanged; spacing and direction permuted)
    by `order`, default slice_axis_order(image)."""
    order = slice_axis_order(image) if order is None else order
    return image if order is None else sitk.PermuteAxes(image, [int(a) for a in order])


def convert_labelled_case(folder: str, case_id: str, image_path: str, label_path: Optional[str],
                          mapping: Mapping[int, int], reorder_axes: bool = False) -> str:
    """One single-channel CT case: read, check the label's geometry against the image, remap the labels, write
    imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz (label_path None: imagesTs/<case>_0000.nii.gz)."""
    image = read_3d(image_path, case_id)
    if label_path is None:
        write_case(folder, case_id, [reorder_slice_axis_first(image) if reorder_axes else image], None, split="Ts")
        return case_id
    label = read_3d(label_path, case_id)
    check_geometry(image, label, case_id)
    _require_integer_values(label, case_id, label_path)
    label = remap_labels(label, mapping, case_id)
    if reorder_axes:  # one permutation, taken from the image, for both
        order = slice_axis_order(image)
        image, label = reorder_slice_axis_first(image, order), reorder_slice_axis_first(label, order)
    write_case(folder, case_id, [image], label)
    return case_id


def convert_cases(cases: Sequence[Case], dataset_id: int, name: str, labels: Mapping[str, int],
                  mapping: Mapping[int, int], task: Mapping, description: str, num_processes: int = 1,
                  overwrite: bool = False, reference: str = "", license: str = "see the dataset's own terms",
                  splits: Optional[List[dict]] = None, test_cases: Sequence[Case] = (),
                  reorder_axes: bool = False, channels: Mapping[str, str] = CT_CHANNELS) -> str:
    """Write a single-channel dataset (CT unless `channels` says otherwise) atomically into nnUNet_raw; returns the
    dataset folder name."""
    cases = require_nonempty(cases, f"training cases for {name}")
    ids = [c[0] for c in cases] + [c[0] for c in test_cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConversionError(f"{name}: case ids {duplicates} occur more than once in the source")
    folder_name = dataset_name(dataset_id, name)
    with staged_dataset(dataset_id, name, overwrite) as folder:
        jobs = [(folder, case, image, label, dict(mapping), reorder_axes) for case, image, label in cases]
        jobs += [(folder, case, image, None, dict(mapping), reorder_axes) for case, image, _ in test_cases]
        run_cases(convert_labelled_case, jobs, num_processes, f"converting {folder_name}")
        finish_dataset(folder, folder_name, channels, labels, len(cases), task, description,
                       reference=reference, license=license, splits=splits)
    return folder_name


def reject_options(options: Mapping) -> None:
    if options:
        raise TypeError(f"unexpected option(s) {sorted(options)}")


def numbered_files(folder: str, pattern: re.Pattern, case_prefix: str) -> Dict[int, str]:
    """{number: path} of the files in `folder` whose name matches `pattern` (group 1 = the case number); two files
    with one number are an error naming the case."""
    found: Dict[int, str] = {}
    for f in listdir_visible(folder):
        match = pattern.match(f)
        if match is not None:
            number = int(match.group(1))
            if number in found:
                raise ConversionError(f"case {case_prefix}{number}: two files {found[number]} and {join(folder, f)}")
            found[number] = join(folder, f)
    return found


def paired_cases(images: Mapping[int, str], labels: Mapping[int, str], case_prefix: str,
                 label_folder: str) -> List[Case]:
    """(case id, image, label) for every numbered image; a missing label or an orphan label is an error."""
    cases = []
    for number in sorted(images):
        if number not in labels:
            raise ConversionError(f"case {case_prefix}{number}: no label for {images[number]} in {label_folder}")
        cases.append((f"{case_prefix}{number}", images[number], labels[number]))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise ConversionError(f"case {case_prefix}{orphans[0]}: {labels[orphans[0]]} has no image")
    return cases
