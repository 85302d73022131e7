"""Tasks with partial labels on shared anatomy, as the demo and the benchmarks score them: each held-out image has a
map of every structure it shows (structuresTs/), of which a task labels only some."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np


@dataclass(frozen=True)
class PartialLabelTask:
    name: str
    channels: Dict[str, str]
    labels: Dict[str, int]
    structures: Dict[str, int]  # every structure the images show -> its value in the structure map
    labelled: Dict[str, str]  # task label name -> the structure it labels (partial labels: a subset)
    description: str

    def label_map(self, structures: np.ndarray) -> np.ndarray:
        """Task-local labels from a structure map: labelled structures get their label, the rest background."""
        label = np.zeros(structures.shape, np.uint8)
        for name, structure in self.labelled.items():
            label[structures == self.structures[structure]] = self.labels[name]
        return label


def cross_activation(task: PartialLabelTask, prediction: np.ndarray, structures: np.ndarray) -> Dict[str, float]:
    """Fraction of each structure the task does *not* label that its prediction labels as foreground (any label);
    {} when the image shows nothing but the task's own structures."""
    own = set(task.labelled.values())
    result = {}
    for name, value in task.structures.items():
        mask = structures == value
        if name not in own and mask.any():
            result[name] = float((prediction[mask] > 0).mean())
    return result
