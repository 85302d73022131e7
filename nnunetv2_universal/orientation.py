"""Orientation-safe reading and writing: every image reaches the network in its task's training orientation.

nnU-Net feeds the network the stored voxel array; it does not reorient. A model pooled from many sources sees a
patient stored with flipped or permuted axes as different anatomy (a network trained without mirroring segments
the wrong side). The collection planner records each task's training orientation (the orientation code, such as
"RAS" or "LPS", of most of its members' training images, from their direction matrices). Every read through a
task's plans view then brings the image to that orientation by a lossless axis permutation and flip
(SimpleITK's DICOMOrient: no resampling, the world geometry is unchanged), and every segmentation written back
is turned back into the input's own voxel order, spacing, origin and direction.

Applies to preprocessing (training data of a member stored in mixed orientations is unified), the plugin's
predictor (`--task`, `--all-tasks`) and stock `nnUNetv2_predict` (through the task's plans view). Off:
`--no_reorient` (plugin prediction) or `nnUNet_universal_reorient=0` in the environment (everywhere).
Only 3D images read with nnU-Net's SimpleITKIO are reoriented; other readers are used as they are.
"""
from __future__ import annotations

import os
from collections import Counter
from functools import lru_cache
from typing import Iterable, List, Mapping, Optional, Tuple, Type, Union

import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_universal.collection.normalization import use_plugin_preprocessing

REORIENT_ENV = "nnUNet_universal_reorient"
ORIENTATION_KEY = "universal_orientation"  # a task view's plans: the orientation its network was trained in
ORIGINAL_ORIENTATION = "universal_original_orientation"  # in properties["sitk_stuff"]: the input's own orientation
INPUT_GEOMETRY = "universal_input_geometry"  # in properties["sitk_stuff"]: the input's spacing, origin, direction


def orientation_code(direction: Iterable[float]) -> str:
    """The closest axis-aligned orientation of a 3D direction matrix, as a three-letter code ("LPS", "RAS", ...)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(d) for d in direction])


def file_orientation(path: str) -> Optional[str]:
    """Orientation code of a 3D image file from its header (no voxels read); None for other dimensions."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return orientation_code(reader.GetDirection()) if reader.GetDimension() == 3 else None


def orientation_counts(paths: Iterable[str]) -> Counter:
    """How many of these 3D image files are stored in each orientation."""
    return Counter(o for o in (file_orientation(p) for p in paths) if o is not None)


def training_orientation(counts: Counter) -> Optional[str]:
    """The orientation most training images are stored in (ties: alphabetical, so the choice is reproducible)."""
    if not counts:
        return None
    best = max(counts.values())
    return sorted(o for o, n in counts.items() if n == best)[0]


def orientation_report(counts_per_member: Mapping[str, Counter]) -> List[str]:
    """One line per member whose training cases are stored in several orientations, and one line naming every
    member's orientation when the members differ (empty when all agree)."""
    lines = []
    for member, counts in counts_per_member.items():
        if len(counts) > 1:
            listing = ", ".join(f"{o}: {n}" for o, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
            lines.append(f"{member}: training cases stored in {len(counts)} orientations ({listing}); preprocessing "
                         f"and prediction bring every image to {training_orientation(counts)}")
    main = {m: training_orientation(c) for m, c in counts_per_member.items() if c}
    if len(set(main.values())) > 1:
        lines.append("members stored in different orientations: " + ", ".join(f"{m} ({o})" for m, o in main.items())
                     + "; each task's images are brought to its own training orientation")
    return lines


def reorientation_enabled() -> bool:
    return os.environ.get(REORIENT_ENV, "1").strip().lower() not in ("0", "f", "false", "no", "off")


class ReorientingSimpleITKIO(SimpleITKIO):
    """nnU-Net's SimpleITKIO that reads 3D images into `target_orientation` and writes segmentations back in the
    orientation the input had. Subclasses bind the target (see `reorienting_reader`)."""

    target_orientation: str = "LPS"

    def read_images(self, image_fnames: Union[List[str], Tuple[str, ...]]) -> Tuple[np.ndarray, dict]:
        images, geometry, originals = [], [], set()
        for f in image_fnames:
            image = sitk.ReadImage(f)
            if image.GetDimension() != 3:  # 2D and multi-component images: as nnU-Net reads them
                return super().read_images(image_fnames)
            originals.add(orientation_code(image.GetDirection()))
            if not images:
                input_geometry = (image.GetSpacing(), image.GetOrigin(), image.GetDirection())
            image = sitk.DICOMOrient(image, self.target_orientation)
            images.append(sitk.GetArrayFromImage(image)[None])
            geometry.append((image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
        if len(originals) > 1 or len({g for g in geometry}) > 1 or len({i.shape for i in images}) > 1:
            raise RuntimeError(f"the channel files of one case differ in orientation, size or geometry: "
                               f"{list(image_fnames)} ({sorted(originals)})")
        spacing, origin, direction = geometry[0]
        properties = {"sitk_stuff": {"spacing": spacing, "origin": origin, "direction": direction,
                                     ORIGINAL_ORIENTATION: originals.pop(),
                                     INPUT_GEOMETRY: input_geometry},
                      "spacing": list(np.abs(spacing[::-1]))}
        return np.vstack(images, dtype=np.float32, casting="unsafe"), properties

    def write_seg(self, seg: np.ndarray, output_fname: str, properties: dict) -> None:
        original = properties["sitk_stuff"].get(ORIGINAL_ORIENTATION)
        if original is None or seg.ndim != 3 or len(properties["sitk_stuff"]["spacing"]) != 3:
            return super().write_seg(seg, output_fname, properties)
        image = sitk.GetImageFromArray(seg.astype(np.uint8 if np.max(seg) < 255 else np.uint16, copy=False))
        image.SetSpacing(properties["sitk_stuff"]["spacing"])
        image.SetOrigin(properties["sitk_stuff"]["origin"])
        image.SetDirection(properties["sitk_stuff"]["direction"])
        sitk.WriteImage(sitk.DICOMOrient(image, original), output_fname, True)


_READER_PREFIX = "SimpleITKIOTo"


def segmentation_in_input_order(seg: np.ndarray, properties: dict) -> Tuple[np.ndarray, dict]:
    """A segmentation read through a ReorientingSimpleITKIO, turned back into the input's own voxel order, with
    properties that any SimpleITKIO writes as they are (--all-tasks merges tasks whose training orientations may
    differ in that common order). Unchanged for images read without reorientation."""
    stuff = properties["sitk_stuff"]
    if stuff.get(ORIGINAL_ORIENTATION) is None or seg.ndim != 3:
        return seg, properties
    image = sitk.GetImageFromArray(seg.astype(np.uint8 if np.max(seg) < 255 else np.uint16, copy=False))
    image.SetSpacing(stuff["spacing"])
    image.SetOrigin(stuff["origin"])
    image.SetDirection(stuff["direction"])
    spacing, origin, direction = stuff[INPUT_GEOMETRY]
    out = dict(properties, sitk_stuff={"spacing": spacing, "origin": origin, "direction": direction},
               spacing=list(np.abs(spacing[::-1])))
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, stuff[ORIGINAL_ORIENTATION])), out


@lru_cache(maxsize=None)
def reorienting_reader(target: str) -> Type[ReorientingSimpleITKIO]:
    """The reader class that brings images to `target` (one class per orientation, made once). It pickles by name
    (nnU-Net hands readers to worker pools): this module resolves `SimpleITKIOTo<target>` on demand."""
    name = f"{_READER_PREFIX}{target}"
    return type(name, (ReorientingSimpleITKIO,), {"target_orientation": target, "__module__": __name__,
                                                  "__qualname__": name})


def __getattr__(name: str):
    if name.startswith(_READER_PREFIX) and len(name) == len(_READER_PREFIX) + 3:
        return reorienting_reader(name[len(_READER_PREFIX):])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OrientedPlansManager(PlansManager):
    """A task view's PlansManager: its reader brings images to the task's training orientation (plans key
    ORIENTATION_KEY) when the task reads with SimpleITKIO and reorientation is on; its configurations preprocess
    with the plugin's preprocessor."""

    def __init__(self, plans_file_or_dict, reorient: bool = True):
        super().__init__(plans_file_or_dict)
        self.reorient = reorient

    def get_configuration(self, configuration_name: str):
        # the plugin's preprocessor (it knows the plugin's normalisation schemes)
        return use_plugin_preprocessing(super().get_configuration(configuration_name))

    @property
    def image_reader_writer_class(self):
        base = recursive_find_reader_writer_by_name(self.plans["image_reader_writer"])
        target = self.plans.get(ORIENTATION_KEY)
        if target and base is SimpleITKIO and getattr(self, "reorient", True) and reorientation_enabled():
            return reorienting_reader(target)
        return base


def orient_plans_manager(plans_manager: PlansManager, target: Optional[str]) -> None:
    """Make an existing PlansManager (stock nnUNetv2_predict's) read into `target` from now on."""
    plans_manager.plans[ORIENTATION_KEY] = target
    plans_manager.__class__ = OrientedPlansManager
    plans_manager.reorient = True
