"""Checks a prediction request against the model's registry and its input files before anything is predicted or
written: unknown task, label or modality names, a case with the wrong number of channel files, and images that are
unreadable, 4D, have a non-orthonormal direction or NaN/inf voxels (a folder whose images all have another ending
than the model's says so). Every problem is a PredictionInputError naming the case and the file; an output folder is
never left with some cases predicted and others refused."""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence

from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

from nnunetv2_universal.case_files import channel_gap, channels_per_case
from nnunetv2_universal.image_checks import read_checked
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


def check_input_folder(folder: str, file_ending: str, spec: Optional[TaskSpec]) -> List[List[str]]:
    """nnU-Net's case lists of `folder` (CASE_XXXX<ending>), every file read and checked; with a task, every case
    must have exactly the task's channels."""
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
        found = f"; it holds {named}, but this model reads {file_ending} files (its training data's ending): " \
                f"convert them" if elsewhere else ""
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
        for f in files:
            image = read_checked(f, case, PredictionInputError)
            if image.GetDimension() == 4 and image.GetSize()[3] > 1:  # a time series, or channels in one file
                raise PredictionInputError(
                    f"case {case}: {f} holds {image.GetSize()[3]} volumes (4D, size {list(image.GetSize())}); "
                    f"the model reads one 3D volume per file: store each channel as its own file "
                    f"({case}_0000{file_ending}, {case}_0001{file_ending} ...) or pick the volume to segment")
    return cases


IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff", ".png", ".bmp", ".dcm")


def images_with_other_endings(folder: str, file_ending: str) -> List[str]:
    """Image files in `folder` (by their ending) that nnU-Net's file listing skips: they do not end in
    `file_ending`."""
    return sorted(n for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_ENDINGS) and not n.endswith(file_ending))


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
