"""The UniSeg paper's 11 upstream tasks: one table for the released model's registry (prompt channel order) and
preprocessing, read by the v1 import and by the UniSeg-11 recipe (`nnUNetv2_universal_build_uniseg11`).

Per task, as the reference trained it: the channel names in file order, the task-local foreground labels in value
order, the target spacing (z, y, x) of its v1 planner, and whether each channel was z-scored inside the nonzero
mask (the v1 planner rule; it fires for BraTS, whose images are skull-stripped, and not for the others). CT
channels get the fixed window [-325, 325] -> [0, 1], every other channel z-score (the registry's default). Names
and labels are those our converters write, so an imported model and a collection built from the converted
datasets share one registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from nnunetv2_universal.registry import TaskRegistry, TaskSpec


@dataclass(frozen=True)
class PaperTask:
    name: str
    what: str
    member_id: int  # our converter's default dataset id
    channels: Tuple[str, ...]
    labels: Tuple[str, ...]
    spacing: Tuple[float, float, float]
    use_mask_for_norm: Tuple[bool, ...]
    description: str

    def spec(self) -> TaskSpec:
        return TaskSpec(name=self.name, dataset=f"Dataset{self.member_id:03d}_{self.name}",
                        channels={str(i): c for i, c in enumerate(self.channels)},
                        labels={"background": 0, **{n: i + 1 for i, n in enumerate(self.labels)}},
                        spacing=list(self.spacing), description=self.description)


_MOTS = (3.0, 1.5, 1.5)
PAPER_TASKS: Tuple[PaperTask, ...] = (
    PaperTask("Liver", "liver", 601, ("CT",), ("liver", "tumour"), _MOTS, (False,), "Liver and liver tumours (LiTS)"),
    PaperTask("KiTS19", "kidney", 602, ("CT",), ("kidney", "tumour"), _MOTS, (False,),
              "Kidneys and kidney tumours (KiTS19)"),
    PaperTask("HepaticVessel", "hepatic vessel", 603, ("CT",), ("vessel", "tumour"), _MOTS, (False,),
              "Hepatic vessels and liver tumours (MSD Task08)"),
    PaperTask("Pancreas", "pancreas", 604, ("CT",), ("pancreas", "tumour"), _MOTS, (False,),
              "Pancreas and pancreatic tumours (MSD Task07)"),
    PaperTask("Colon", "colon", 605, ("CT",), ("colon_cancer",), _MOTS, (False,), "Colon cancer (MSD Task10)"),
    PaperTask("Lung", "lung", 606, ("CT",), ("lung_cancer",), _MOTS, (False,), "Lung tumours (MSD Task06)"),
    PaperTask("Spleen", "spleen", 607, ("CT",), ("spleen",), _MOTS, (False,), "Spleen (MSD Task09)"),
    PaperTask("VerSe20Binary", "vertebrae", 608, ("CT",), ("vertebrae",), (4.0, 2.0, 2.0), (False,),
              "All vertebrae as one label (VerSe 2020)"),
    PaperTask("MultiSiteProstate", "prostate", 609, ("T2",), ("prostate",), _MOTS, (False,),
              "Prostate in T2 MRI (six sites)"),
    PaperTask("BraTS21", "brain tumour", 610, ("T1", "T1ce", "T2", "FLAIR"),
              ("edema", "necrotic_core", "enhancing_tumor"), (1.0, 1.0, 1.0), (True, True, True, True),
              "Brain tumour sub-regions (BraTS 2021)"),
    PaperTask("AutoPETTumour", "whole-body tumour", 611, ("CT", "PET"), ("lesion",), (8.0, 4.0, 4.0), (False, False),
              "FDG-avid lesions in whole-body PET/CT (AutoPET 2022)"),
)


def paper_registry() -> TaskRegistry:
    """The released model's registry: task i is prompt channel i."""
    return TaskRegistry([t.spec() for t in PAPER_TASKS])
