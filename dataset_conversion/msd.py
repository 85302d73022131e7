"""Medical Segmentation Decathlon (MSD) CT tasks: the shared reader/converter behind the thin modules
msd_hepatic_vessel (603), msd_pancreas (604), msd_colon (605), msd_lung (606) and msd_spleen (607), plus the
labelled-CT-pair pieces the liver, kits19 and btcv converters share.

Expected source layout (one MSD task tar from http://medicaldecathlon.com, extracted)::

    TaskXX_Name/                        <- pass this folder (or its parent) as -i
        dataset.json                    optional; if present, its "labels" must list the expected values
        imagesTr/<prefix>_NNN.nii.gz    one 3D CT per case
        labelsTr/<prefix>_NNN.nii.gz    the label map of the same case (same name)
        imagesTs/...                    not converted (no labels; UniSeg evaluates on its validation fold)
        ._*                             macOS resource files shipped inside every MSD tar: ignored everywhere

Case ids keep the MSD names (hepaticvessel_001, pancreas_004, colon_001, lung_001, spleen_2, ...), which are also
the names UniSeg uses. Labels are kept as they are (identity mapping, unexpected values are an error). Every
image must be a 3D single-channel volume whose label has the same size, spacing, origin and direction; the
geometry is copied unchanged. All five tasks are UniSeg upstream tasks (via MOTS): target spacing (z, y, x)
[3, 1.5, 1.5] mm, CT window [-325, 325] HU (the registry default for CT).

Quirks handled: `._*` junk files; a wrong task folder (images without the expected `<prefix>_` names, or a
dataset.json whose labels differ) is rejected with a message; a case with a missing label (or a label without
its image) is an error naming the case; float label maps are accepted only if every value is an integer.

Generic helpers (candidates for the shared toolkit): `read_3d`, `convert_labelled_case` (read, check geometry,
remap, optionally reorder axes, write one case), `convert_cases` (the staged write of a whole single-channel CT
dataset), `slice_axis_order` / `reorder_slice_axis_first` (lossless axis permutation, used by kits19's
--reorder_axes) and `case_number` (natural sort key of `<name>_<int>` case ids).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_universal.dataset_conversion.toolkit import (  # noqa: F401  (re-exported for the converters)
    CT_CHANNELS, FILE_ENDING, Case, ConversionError, case_number, check_geometry, convert_cases,
    convert_labelled_case, converter_parser, dataset_name, finish_dataset, listdir_visible, raw_root, read_3d,
    read_image, reject_options, remap_labels, reorder_slice_axis_first, require_nonempty, run_cases,
    slice_axis_order, staged_dataset, task_entry, write_case)

UNISEG_SPACING = (3.0, 1.5, 1.5)  # uniseg.md §5.2, MOTSPlanner3D (tasks 0-6)
MSD_REFERENCE = ("Antonelli et al., The Medical Segmentation Decathlon, Nature Communications 13, 4128 (2022); "
                 "http://medicaldecathlon.com")
MSD_LICENSE = "CC-BY-SA 4.0"

# ---------------------------------------------------------------------------------------------- MSD specifics
@dataclass(frozen=True)
class MSDTask:
    """One MSD CT task as a UniSeg upstream dataset."""
    folder: str                 # the MSD folder name, e.g. "Task08_HepaticVessel"
    prefix: str                 # case-id prefix, e.g. "hepaticvessel"
    default_id: int
    name: str                   # dataset and task name, e.g. "HepaticVessel"
    labels: Mapping[str, int]   # target labels (the MSD values, kept as they are)
    description: str            # one sentence: modality and structures (used as the text prompt)
    spacing: Optional[Sequence[float]] = UNISEG_SPACING
    mapping: Optional[Mapping[int, int]] = field(default=None)  # source value -> target; default identity

    @property
    def label_mapping(self) -> Dict[int, int]:
        return dict(self.mapping) if self.mapping is not None else {v: v for v in self.labels.values()}

    def task_entry(self) -> Dict:
        return task_entry(self.name, CT_CHANNELS, self.labels, self.description, spacing=self.spacing)


def locate_task_folder(source: str, task_folder: str) -> str:
    """The MSD task folder itself (holding imagesTr) or a parent holding `task_folder`."""
    if not os.path.isdir(source):
        raise ConversionError(f"source folder {source} does not exist")
    if os.path.isdir(join(source, "imagesTr")):
        return source
    if os.path.isdir(join(source, task_folder, "imagesTr")):
        return join(source, task_folder)
    raise ConversionError(f"{source}: expected the MSD folder {task_folder} (holding imagesTr/ and labelsTr/) "
                          f"or its parent")


def _check_msd_dataset_json(folder: str, task_folder: str, expected_values: Sequence[int]) -> None:
    path = join(folder, "dataset.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            labels = json.load(f).get("labels", None)
    except (OSError, ValueError, AttributeError) as e:
        raise ConversionError(f"{path} cannot be read: {e}") from None
    if labels is None:
        return
    try:
        found = sorted(int(k) for k in labels)
    except (TypeError, ValueError):
        raise ConversionError(f"{path}: 'labels' keys are not label values: {labels}") from None
    if found != sorted(expected_values):
        raise ConversionError(f"{path} lists labels {labels}, but {task_folder} has label values "
                              f"{sorted(expected_values)}: is this the right task folder?")


def find_msd_cases(source: str, task_folder: str, prefix: str, expected_values: Sequence[int]) -> List[Case]:
    """(case id, image, label) for every imagesTr/<prefix>_*.nii.gz, skipping `._*` files."""
    folder = locate_task_folder(source, task_folder)
    images_dir, labels_dir = join(folder, "imagesTr"), join(folder, "labelsTr")
    images = [f for f in listdir_visible(images_dir) if f.endswith(FILE_ENDING)]
    ours = [f for f in images if f.startswith(prefix + "_")]
    if images and not ours:
        raise ConversionError(f"{images_dir} holds no {prefix}_*{FILE_ENDING} images (found e.g. {images[0]}): "
                              f"is this {task_folder}?")
    require_nonempty(ours, f"{prefix}_*{FILE_ENDING} images in {images_dir}")
    if not os.path.isdir(labels_dir):
        raise ConversionError(f"{folder}: labelsTr/ is missing")
    _check_msd_dataset_json(folder, task_folder, expected_values)
    label_files = {f for f in listdir_visible(labels_dir) if f.endswith(FILE_ENDING)}
    cases = []
    for f in ours:
        case = f[:-len(FILE_ENDING)]
        if f not in label_files:
            raise ConversionError(f"case {case}: label file {join(labels_dir, f)} is missing")
        cases.append((case, join(images_dir, f), join(labels_dir, f)))
    orphans = sorted(label_files - set(ours))
    if orphans:
        raise ConversionError(f"case {orphans[0][:-len(FILE_ENDING)]}: label {join(labels_dir, orphans[0])} has no "
                              f"image in {images_dir}")
    return sorted(cases, key=lambda c: case_number(c[0]))


def convert_msd(task: MSDTask, source: str, dataset_id: Optional[int] = None, num_processes: int = 1,
                overwrite: bool = False) -> str:
    """Convert one MSD CT task; returns the dataset folder name (DatasetXXX_Name)."""
    mapping = task.label_mapping
    cases = find_msd_cases(source, task.folder, task.prefix, sorted(mapping))
    return convert_cases(cases, task.default_id if dataset_id is None else dataset_id, task.name, task.labels,
                         mapping, task.task_entry(), f"MSD {task.folder}: {task.description}", num_processes,
                         overwrite, reference=MSD_REFERENCE, license=MSD_LICENSE)


def msd_main(task: MSDTask, convert: Callable[..., str], argv=None) -> None:
    parser = converter_parser(f"Convert MSD {task.folder} (imagesTr/labelsTr, see the module docstring) into "
                              f"nnU-Net raw Dataset{task.default_id:03d}_{task.name}.", task.default_id,
                              layout=('TaskXX_Name/ (or its parent) with imagesTr/<prefix>_NNN.nii.gz and '
                                      'labelsTr/<prefix>_NNN.nii.gz'))
    args = parser.parse_args(argv)
    folder = convert(args.i, args.d, args.np, args.overwrite)
    print(f"wrote {join(raw_root(), folder)}")
