"""Checks a dataset's training data before any fingerprinting or planning, so that bad data stop with one line
that names the dataset, the case, the file and the value instead of a crash in epoch 1 or a silently dropped case:

- every label file has its image files (`CASE_0000<ending>` ... one per channel of dataset.json) and every image
  case a label; file names follow nnU-Net's `CASE_XXXX<ending>`; numTraining agrees with the files;
- every file holds one scalar volume (no 4D series, no RGB); channels and label share one voxel grid (size, spacing,
  origin, direction: nnU-Net pairs them voxel by voxel and at most warns); directions are orthonormal (headers only);
- with `read_values`: no NaN/inf voxel in images stored as float (ITK would read them as 0), and every label value
  is one that dataset.json declares.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Iterable, List, Set

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunetv2_universal.case_files import channel_gap, channels_per_case
from nnunetv2_universal.image_checks import (NON_FINITE_ADVICE, count_non_finite, direction_problem, grid_differences,
                                            read_header, volume_problem)


class TrainingDataError(ValueError):
    """A training case cannot be used as it is; the message names the dataset, the case, the file and the fix."""


def declared_label_values(dataset_json: dict) -> Set[int]:
    """Every integer dataset.json's labels (and regions) name, the ignore label included."""
    values = set()
    for value in dataset_json.get("labels", {}).values():
        values.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return values


def label_values(array: np.ndarray) -> np.ndarray:
    """Distinct values of a label array (a counting pass for small integer ranges, which is what labels are)."""
    if array.size and array.dtype.kind in "ui":
        low, high = int(array.min()), int(array.max())
        if high - low < 1 << 16:
            shifted = array.ravel().astype(np.int64) - low if low else array.ravel()
            return np.flatnonzero(np.bincount(shifted)) + low
    return np.unique(array)


def training_files(raw_folder: str, dataset_json: dict, where: str) -> Dict[str, dict]:
    """{case: {'images': [...], 'label': ...}} for every case that has a label or an image file, with every
    missing or extra file named. Follows nnU-Net's layout (imagesTr/CASE_XXXX<ending>, labelsTr/CASE<ending>) or
    the explicit lists of dataset.json's 'dataset' entry."""
    ending = dataset_json["file_ending"]
    num_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    if "dataset" in dataset_json:  # explicit file lists: nnU-Net resolves them, we check that they exist
        return get_filenames_of_train_images_and_targets(raw_folder, dataset_json)
    images_dir, labels_dir = join(raw_folder, "imagesTr"), join(raw_folder, "labelsTr")
    for folder in (images_dir, labels_dir):
        if not os.path.isdir(folder):
            raise TrainingDataError(f"{where}: folder {folder} is missing")
    channels = channels_per_case(images_dir, ending, TrainingDataError, f"{where}: imagesTr")
    labelled = {name[:-len(ending)] for name in os.listdir(labels_dir) if name.endswith(ending)}
    files = {}
    for case in sorted(set(channels) | labelled):
        if case not in labelled:
            raise TrainingDataError(f"{where}: case {case} has image(s) but no label labelsTr/{case}{ending}; add "
                                    f"the label or move the images out of imagesTr")
        missing = channel_gap(case, channels.get(case, set()), ending, num_channels)
        if missing:
            raise TrainingDataError(f"{where}: case {case}: imagesTr/{missing} is missing (the "
                                    f"dataset has {num_channels} channel(s): {case}_0000{ending} ... "
                                    f"{case}_{num_channels - 1:04d}{ending}; labelsTr/{case}{ending} exists)")
        extra = sorted(channels[case] - set(range(num_channels)))
        if extra:
            raise TrainingDataError(f"{where}: case {case}: imagesTr/{case}_{extra[0]:04d}{ending} is a channel "
                                    f"that dataset.json's channel_names ({num_channels}) does not declare")
        files[case] = {"images": [join(images_dir, f"{case}_{c:04d}{ending}") for c in range(num_channels)],
                       "label": join(labels_dir, case + ending)}
    return files


def check_case(where: str, case: str, entry: dict, allowed: Set[int], read_values: bool) -> None:
    """One case: files readable, one volume each, on the label's grid, orthonormal directions; with read_values
    NaN/inf and label values."""
    headers = {}
    for path in list(entry["images"]) + [entry["label"]]:
        reader = read_header(path, case, TrainingDataError)
        problem = volume_problem(reader) or direction_problem(reader.GetDirection(), reader.GetDimension())
        if problem:
            raise TrainingDataError(f"{where}: case {case}: {path} {problem}")
        headers[path] = reader
    for path in entry["images"]:
        differences = grid_differences(headers[path], headers[entry["label"]])
        if differences:
            what, image_value, label_value = differences[0]
            raise TrainingDataError(f"{where}: case {case}: {path} has {what} {image_value}, its label "
                                    f"{entry['label']} {label_value}; image and label must share one voxel grid "
                                    f"(resample the label onto the image in world coordinates, nearest neighbour)")
    if not read_values:
        return
    for path in entry["images"]:
        bad = count_non_finite(None, path, headers[path].GetPixelID())
        if bad:
            raise TrainingDataError(f"{where}: case {case}: {path} has {bad} NaN or infinite voxel(s) (nnU-Net would "
                                    f"read them as 0); {NON_FINITE_ADVICE}")
    label = sitk.GetArrayFromImage(sitk.ReadImage(entry["label"]))
    if label.dtype.kind == "f" and not np.all(np.isfinite(label) & (label == np.round(label))):
        raise TrainingDataError(f"{where}: case {case}: {entry['label']} holds non-integer or NaN values; labels "
                                f"must be whole numbers")
    values = label_values(label)
    unknown = [int(v) for v in values if int(v) not in allowed]
    if unknown:
        hint = " (a binary mask stored as 0/255: store it as 0/1)" if unknown == [255] and 1 not in values else ""
        raise TrainingDataError(f"{where}: case {case}: {entry['label']} holds label value(s) {unknown} that "
                                f"dataset.json's labels do not declare ({sorted(allowed)}){hint}; fix the label file "
                                f"or add the class to dataset.json")


def check_training_data(raw_folder: str, read_values: bool = True) -> int:
    """Check one raw dataset folder (nnUNet_raw/DatasetXXX_Name); returns its number of training cases."""
    where = os.path.basename(os.path.normpath(raw_folder))
    dataset_json = load_json(join(raw_folder, "dataset.json"))
    files = training_files(raw_folder, dataset_json, where)
    if not files:
        raise TrainingDataError(f"{where}: no training cases in imagesTr/labelsTr")
    declared = dataset_json.get("numTraining")
    if declared is not None and int(declared) != len(files):
        raise TrainingDataError(f"{where}: dataset.json says numTraining {declared}, but imagesTr/labelsTr hold "
                                f"{len(files)} case(s); correct numTraining (or restore the missing cases)")
    allowed = declared_label_values(dataset_json)
    for case, entry in files.items():
        check_case(where, case, entry, allowed, read_values)
    return len(files)


def check_datasets(raw_folders: Iterable[str], read_values: bool = True, report: bool = True) -> int:
    """Check several datasets before any work starts; prints one summary line. Returns the number of cases."""
    start = time.perf_counter()
    folders: List[str] = list(raw_folders)
    total = sum(check_training_data(f, read_values) for f in folders)
    if report:
        what = "files, label values and NaN" if read_values else "files and headers"
        print(f"Checked {total} training case(s) of {len(folders)} dataset(s) ({what}) in "
              f"{time.perf_counter() - start:.1f} s")
    return total
