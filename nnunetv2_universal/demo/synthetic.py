"""A small deterministic synthetic multi-task, multi-modality data set for the demo and the tests.

Four member datasets in nnU-Net raw format, each registering its task (`universal_task` in dataset.json):
- SynthLiverCT and SynthKidneyCT: 1 channel CT in HU, drawn from one and the same abdomen model, so every image
  of either dataset shows a liver-like organ with a hypodense lesion *and* two enhancing kidneys (shared anatomy).
  Each dataset labels only its own structures (partial labels): SynthLiverCT organ=1, lesion=2; SynthKidneyCT
  kidney=1. No task can be recognised from the image; only the task condition says what to segment.
- SynthPETCT: 2 channels (CT in HU, PET in SUV), one hot lesion, label lesion=1.
- SynthBrainMR: 4 channels (T1, T1ce, T2, FLAIR, arbitrary MR units, zero outside the head), nested tumour
  labels edema=1, necrosis=2, enhancing=3.
Spacings differ per dataset. Held-out cases go to imagesTs/ with their labels in labelsTs/ and, in
structuresTs/, a map of every structure the image shows (values of the task's `STRUCTURES`), which is what
cross-activation is measured against (see `cross_activation`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunetv2_universal.demo.partial_labels import PartialLabelTask, cross_activation  # noqa: F401 (re-export)


def _ellipsoid(shape, center, radii) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0


def _write(array: np.ndarray, spacing_zyx: Sequence[float], path: str) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sitk.WriteImage(image, path, True)


# Structure values of the shared abdomen model (structuresTs/ of both CT datasets).
ABDOMEN_STRUCTURES = {"liver": 1, "lesion": 2, "kidney": 3}


def _abdomen_ct(rng: np.random.Generator, shape) -> Tuple[List[np.ndarray], np.ndarray]:
    """CT in HU of an abdomen: fat-like body, a liver (40 HU) with a hypodense lesion (-30 HU) and two enhancing
    kidneys (230 HU), all present in every image; returns ([ct], structure map with ABDOMEN_STRUCTURES values)."""
    z, y, x = shape
    body = _ellipsoid(shape, (z / 2, y / 2, x / 2), (z, y * 0.45, x * 0.45))
    kidneys = np.zeros(shape, bool)
    for side in (-1, 1):
        k_center = (z / 2 + rng.uniform(-2, 2), y * 0.62 + rng.uniform(-3, 3), x / 2 + side * x * 0.2)
        kidneys |= _ellipsoid(shape, k_center, (z * 0.3, rng.uniform(5, 7), rng.uniform(3.5, 4.5))) & body
    center = (z / 2 + rng.uniform(-2, 2), y * 0.36 + rng.uniform(-3, 3), x / 2 + rng.uniform(-5, 5))
    liver = _ellipsoid(shape, center, (z * 0.35, rng.uniform(8, 11), rng.uniform(9, 13))) & body & ~kidneys
    lesion_c = tuple(c + rng.uniform(-2.5, 2.5) for c in center)
    lesion = _ellipsoid(shape, lesion_c, (z * 0.15, rng.uniform(3, 4.5), rng.uniform(3, 4.5))) & liver
    ct = np.where(body, -80.0, -1000.0) + rng.normal(0, 15, shape)
    ct[liver] = 40 + rng.normal(0, 15, liver.sum())
    ct[lesion] = -30 + rng.normal(0, 15, lesion.sum())
    ct[kidneys] = 230 + rng.normal(0, 15, kidneys.sum())
    structures = np.zeros(shape, np.uint8)
    for name, mask in (("liver", liver), ("lesion", lesion), ("kidney", kidneys)):
        structures[mask] = ABDOMEN_STRUCTURES[name]
    return [ct.astype(np.float32)], structures


def _pet_ct(rng: np.random.Generator, shape) -> Tuple[List[np.ndarray], np.ndarray]:
    z, y, x = shape
    body = _ellipsoid(shape, (z / 2, y / 2, x / 2), (z, y * 0.45, x * 0.45))
    center = (z / 2 + rng.uniform(-2, 2), y / 2 + rng.uniform(-8, 8), x / 2 + rng.uniform(-8, 8))
    lesion = _ellipsoid(shape, center, (z * 0.25, rng.uniform(4, 7), rng.uniform(4, 7))) & body
    ct = np.where(body, 20.0, -1000.0) + rng.normal(0, 25, shape)
    ct[lesion] += 30
    pet = np.where(body, 1.0, 0.05) + np.abs(rng.normal(0, 0.3, shape))
    pet[lesion] = rng.uniform(6, 10) + rng.normal(0, 0.8, lesion.sum())
    return [ct.astype(np.float32), pet.astype(np.float32)], lesion.astype(np.uint8)


def _brain_mr(rng: np.random.Generator, shape) -> Tuple[List[np.ndarray], np.ndarray]:
    z, y, x = shape
    head = _ellipsoid(shape, (z / 2, y / 2, x / 2), (z * 0.48, y * 0.45, x * 0.42))
    center = (z / 2 + rng.uniform(-2, 2), y / 2 + rng.uniform(-5, 5), x / 2 + rng.uniform(-5, 5))
    r = rng.uniform(7, 9)
    edema = _ellipsoid(shape, center, (r * 0.8, r, r)) & head
    # a necrotic core of about 100 voxels: a smaller one (30-50) was learned in only some 1,600-iteration runs
    enhancing = _ellipsoid(shape, center, (r * 0.55, r * 0.65, r * 0.65)) & head
    necrosis = _ellipsoid(shape, center, (r * 0.35, r * 0.4, r * 0.4)) & head
    label = np.zeros(shape, np.uint8)
    label[edema] = 1
    label[enhancing] = 3
    label[necrosis] = 2
    # (T1, T1ce, T2, FLAIR) means for (brain, edema, necrosis, enhancing)
    means = {"t1": (500, 420, 250, 450), "t1ce": (500, 430, 260, 1100), "t2": (400, 800, 1000, 600),
             "flair": (400, 950, 350, 700)}
    channels = []
    for key in ("t1", "t1ce", "t2", "flair"):
        brain, ed, nec, enh = means[key]
        img = np.zeros(shape, np.float32)
        img[head] = brain
        img[label == 1] = ed
        img[label == 2] = nec
        img[label == 3] = enh
        img[head] += rng.normal(0, 40, head.sum())
        channels.append(img.astype(np.float32))
    return channels, label


@dataclass(frozen=True)
class SyntheticTask(PartialLabelTask):
    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    make: Callable  # rng, shape -> (channel arrays, structure map)


_MR_TUMOUR = {"edema": 1, "necrosis": 2, "enhancing": 3}
SYNTHETIC_TASKS = (
    SyntheticTask("SynthLiverCT", {"0": "CT"}, {"background": 0, "organ": 1, "lesion": 2}, ABDOMEN_STRUCTURES,
                  {"organ": "liver", "lesion": "lesion"},
                  "CT of the abdomen (liver, lesion, kidneys); labels the liver-like organ and its lesion",
                  (20, 56, 56), (2.5, 1.2, 1.2), _abdomen_ct),
    SyntheticTask("SynthKidneyCT", {"0": "CT"}, {"background": 0, "kidney": 1}, ABDOMEN_STRUCTURES,
                  {"kidney": "kidney"}, "CT of the abdomen (liver, lesion, kidneys); labels both kidneys",
                  (20, 56, 56), (2.5, 1.2, 1.2), _abdomen_ct),
    SyntheticTask("SynthPETCT", {"0": "CT", "1": "PET"}, {"background": 0, "lesion": 1}, {"lesion": 1},
                  {"lesion": "lesion"}, "PET/CT: FDG-avid lesion", (20, 48, 48), (3.0, 2.0, 2.0), _pet_ct),
    SyntheticTask("SynthBrainMR", {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
                  {"background": 0, **_MR_TUMOUR}, _MR_TUMOUR, {k: k for k in _MR_TUMOUR},
                  "brain MR: glioma with edema, necrotic core and enhancing rim", (24, 40, 40), (1.5, 1.5, 1.5),
                  _brain_mr),
)


def make_synthetic_datasets(raw_root: str, first_id: int = 501, num_train: int = 8, num_test: int = 2,
                            seed: int = 0) -> List[str]:
    """Write the synthetic member datasets (ids first_id, first_id + 1, ...); returns their dataset names."""
    names = []
    for offset, task in enumerate(SYNTHETIC_TASKS):
        name = f"Dataset{first_id + offset:03d}_{task.name}"
        root = join(raw_root, name)
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "structuresTs"):
            maybe_mkdir_p(join(root, sub))
        rng = np.random.default_rng(seed * 1000 + offset)
        for i in range(num_train + num_test):
            split = "Tr" if i < num_train else "Ts"
            case = f"{task.name.lower()}_{i:03d}"
            images, structures = task.make(rng, task.shape)
            for c, img in enumerate(images):
                _write(img, task.spacing, join(root, f"images{split}", f"{case}_{c:04d}.nii.gz"))
            _write(task.label_map(structures), task.spacing, join(root, f"labels{split}", f"{case}.nii.gz"))
            if split == "Ts":
                _write(structures, task.spacing, join(root, "structuresTs", f"{case}.nii.gz"))
        generate_dataset_json(root, task.channels, task.labels, num_train, ".nii.gz", dataset_name=name,
                              description=task.description,
                              universal_task={"name": task.name, "channels": task.channels, "labels": task.labels,
                                              "spacing": list(task.spacing), "description": task.description})
        names.append(name)
    return names


if __name__ == "__main__":
    from nnunetv2.paths import nnUNet_raw
    print(make_synthetic_datasets(os.fspath(nnUNet_raw)))
