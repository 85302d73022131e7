"""The real-anatomy benchmark's tasks as its scoring sees them: real abdominal CT (TotalSegmentator's test files,
converted by `nnUNetv2_universal_convert_totalseg_examples`), RealLiverCT labelling the liver and RealSpleenCT the
spleen on the same images (partial labels). Held-out cases `_a_` are the training patient, `_b_` a second one."""
from __future__ import annotations

from nnunetv2_universal.dataset_conversion.toolkit import CT_CHANNELS
from nnunetv2_universal.dataset_conversion.totalseg_examples import STRUCTURES, TASKS, description
from nnunetv2_universal.demo.partial_labels import PartialLabelTask

REAL_TASKS = tuple(PartialLabelTask(name, dict(CT_CHANNELS), {"background": 0, structure: 1}, STRUCTURES,
                                    {structure: structure}, description(name)) for name, structure in TASKS.items())


def patient_of(case: str) -> str:
    """'a' (the training patient) or 'b' (the second patient) for a held-out case id."""
    return "b" if "_b_" in case else "a"
