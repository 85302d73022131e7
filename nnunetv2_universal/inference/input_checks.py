"""Checks a prediction request against the model's registry and its input files before anything is predicted or
written: unknown task, label or modality names, a case with the wrong number of channel files, and images that are
unreadable, 4D or RGB, have a non-orthonormal direction or NaN/inf voxels, and channel files of one case on
different voxel grids (a folder whose images all have another ending than the model's says so). Every problem is a
PredictionInputError naming the case and the file; an output folder is never left with some cases predicted and
others refused. A channel read as CT without any air-like voxel (an MR, or HU without the rescale intercept) gets a
note on stderr: it may be a tight crop, so it is not refused."""
from __future__ import annotations

import os
import sys
from typing import Iterable, List, Optional, Sequence, Set

import SimpleITK as sitk

from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

from nnunetv2_universal.case_files import channel_gap, channels_per_case
from nnunetv2_universal.image_checks import grid_differences, read_checked, volume_problem
from nnunetv2_universal.registry import TaskRegistry, TaskSpec, UnknownTaskError


class PredictionInputError(ValueError):
    """A prediction request or one of its input files cannot be used; the message says which and why."""


def check_request(registry: TaskRegistry, task: Optional[str], labels: Optional[Sequence[str]],
                  modalities: Optional[Sequence[str]], tasks: Optional[Sequence[str]] = None) -> Optional[TaskSpec]:
    """The requested task (None with --all-tasks), after checking every name against the registry."""
    try:
        for name in list(tasks or []) + ([task] if task else []):
            registry.index(name)
    except UnknownTaskError as e:
        raise PredictionInputError(e.args[0]) from None
    spec = registry.task(task) if task else None
    unknown = [n for n in labels or [] if n not in spec.foreground_labels] if spec else []
    if unknown:
        raise PredictionInputError(f"task {spec.name} has no label(s) {unknown}; its labels: "
                                   f"{sorted(spec.foreground_labels)}")
    known = {m.lower() for m in registry.modalities}
    strange = [m for m in modalities or [] if m.lower() not in known]
    if strange:
        raise PredictionInputError(f"unknown modality name(s) {strange}; the model's modalities: "
                                   f"{', '.join(registry.modalities)}")
    return spec


CT_SCHEMES = ("ct_window", "ct_clip_zscore", "ct")  # normalisations that read Hounsfield units
AIR_HU = -500.0  # any CT that shows air or lung has voxels below this; an MR or a CT without intercept does not


def hu_channels(tasks: Iterable[TaskSpec], num_channels: int) -> Set[int]:
    """Channels that every task taking `num_channels` inputs reads as CT in Hounsfield units."""
    per_task = [{c for c, scheme in enumerate(t.normalization) if scheme in CT_SCHEMES}
                for t in tasks if t.num_channels == num_channels]
    return set.intersection(*per_task) if per_task else set()


def not_hu_note(case: str, path: str, image: sitk.Image) -> Optional[str]:
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    if lowest >= AIR_HU:
        return (f"Note: case {case}: {path} is read as CT, but no voxel is below {AIR_HU:g} HU (lowest {lowest:g}; "
                f"air is about -1000): check that it is a CT in Hounsfield units (rescale slope and intercept "
                f"applied), not an MR or a crop without air")
    return None


def check_input_folder(folder: str, file_ending: str, spec: Optional[TaskSpec],
                       tasks: Optional[Sequence[TaskSpec]] = None) -> List[List[str]]:
    """nnU-Net's case lists of `folder` (CASE_XXXX<ending>), every file read and checked; with a task, every case
    must have exactly the task's channels. `tasks`: what will run on the cases (default: `spec`), for the note on
    channels read as CT."""
    tasks = list(tasks) if tasks is not None else [spec] if spec is not None else []
    if not os.path.isdir(folder):
        raise PredictionInputError(f"input folder {folder} does not exist")
    for case, channels in channels_per_case(folder, file_ending, PredictionInputError, folder.rstrip(os.sep)).items():
        gap = channel_gap(case, channels, file_ending, spec.num_channels if spec is not None else None)
        if gap:
            expected = (f"task {spec.name} takes {spec.num_channels}: {', '.join(spec.modalities)}" if spec is not None
                        else "channels are numbered from 0000 without gaps")
            raise PredictionInputError(f"case {case}: {os.path.join(folder, gap)} is missing; nnU-Net names a case's "
                                       f"files {case}_0000{file_ending}, {case}_0001{file_ending} ... ({expected})")
    cases = create_lists_from_splitted_dataset_folder(folder, file_ending)
    elsewhere = images_with_other_endings(folder, file_ending)
    named = ", ".join(elsewhere[:3]) + (" ..." if len(elsewhere) > 3 else "")
    if not cases:
        dicom = [] if elsewhere else dicom_files(folder)
        found = ""
        if elsewhere:
            found = f"; it holds {named}, but this model reads {file_ending} files (its training data's ending): " \
                    f"convert them"
        elif dicom:
            found = f"; it holds {len(dicom)} DICOM file(s) ({dicom[0]} ...): write each series as one volume " \
                    f"first, e.g. with SimpleITK's ImageSeriesReader to CASE_0000{file_ending}"
        raise PredictionInputError(f"no input cases (CASE_0000{file_ending} ...) in {folder}{found}")
    if elsewhere:
        print(f"Note: {len(elsewhere)} file(s) in {folder} do not end in {file_ending} and are not predicted: {named}",
              file=sys.stderr)
    for files in cases:
        case = os.path.basename(files[0])[:-len(file_ending) - 5]  # CASE_0000.nii.gz -> CASE
        if spec is not None and len(files) != spec.num_channels:
            names = ", ".join(os.path.basename(f) for f in files)
            raise PredictionInputError(
                f"case {case}: {len(files)} channel file(s) ({names}) but task {spec.name} takes "
                f"{spec.num_channels} ({', '.join(spec.modalities)}: {case}_0000{file_ending} ...)")
        first, as_ct = None, hu_channels(tasks, len(files))
        for channel, f in enumerate(files):
            image = read_checked(f, case, PredictionInputError)
            problem = volume_problem(image)
            if problem:
                raise PredictionInputError(
                    f"case {case}: {f} {problem}; the model reads one 3D volume per file: store each channel as its "
                    f"own file ({case}_0000{file_ending}, {case}_0001{file_ending} ...) or pick the volume to segment")
            first = image if first is None else first
            differences = grid_differences(image, first)
            if differences:
                what, value, first_value = differences[0]
                raise PredictionInputError(
                    f"case {case}: {f} has {what} {value}, {files[0]} {first_value}; the channels of a case must "
                    f"share one voxel grid (nnU-Net stacks them voxel by voxel): resample them onto one grid first")
            note = not_hu_note(case, f, image) if channel in as_ct else None
            if note:
                print(note, file=sys.stderr)
    return cases


IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff", ".png", ".bmp", ".dcm")


def images_with_other_endings(folder: str, file_ending: str) -> List[str]:
    """Image files in `folder` (by their ending) that nnU-Net's file listing skips: they do not end in
    `file_ending`."""
    return sorted(n for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_ENDINGS) and not n.endswith(file_ending))


def dicom_files(folder: str) -> List[str]:
    """Files in `folder` that carry DICOM's preamble marker ('DICM' at byte 128), whatever their names (series are
    often stored without an ending)."""
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    found.append(name)
    return found


def check_channel_counts(cases: List[List[str]], file_ending: str, registry: TaskRegistry) -> None:
    """--all-tasks: every case has a channel count some task takes. In a folder that mixes channel counts, cases
    with fewer files than others are named on stderr (a lost file would make a case run other tasks)."""
    counts = {}
    for files in cases:
        case = os.path.basename(files[0])[:-len(file_ending) - 5]
        counts[case] = len(files)
        if len(files) not in registry.channel_counts:
            raise PredictionInputError(
                f"case {case}: {len(files)} channel file(s); no task takes that many. Tasks: "
                + ", ".join(f"{t.name} ({t.num_channels}: {', '.join(t.modalities)})" for t in registry))
    if len(set(counts.values())) > 1:
        most = max(counts.values())
        fewer = sorted(c for c, n in counts.items() if n < most)
        print(f"Note: the input folder mixes channel counts; {', '.join(fewer)} have fewer channel files than "
              f"others ({most}): each runs the tasks of its own channel count. Check that no file is missing.",
              file=sys.stderr)


def check_output_folder_empty(folder: str, file_ending: str) -> None:
    """--all-tasks: an output folder that already holds segmentations (or a labels.json) is not written into
    without --overwrite (the merged maps and their label table must come from one run)."""
    if not os.path.isdir(folder):
        return
    held = sorted(f for f in os.listdir(folder) if f.endswith(file_ending) or f == "labels.json")
    if held:
        raise PredictionInputError(f"output folder {folder} already holds {len(held)} file(s) such as {held[0]}; "
                                   f"choose an empty folder or pass --overwrite")
