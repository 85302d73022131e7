"""The echo collection's registry: classes (nnU-Net regions, in output-channel order) with their text, views, and
per-case metadata (dataset, view, annotated classes and frames), all read from dataset.json.

dataset.json keys (written by the echo converters and nnUNetv2_universal_build_echo_collection):
- labels: {"background": 0, "LV_epi": [1, 2], "LV_endo": [1], "ignore": 3}, regions_class_order [2, 1];
- echo_classes: {region name: class text}, e.g. "LV_endo": "left ventricle endocardium";
- echo_views: ["A2C", "A4C", "PSAX"];
- echo_case_metadata: {case: {"dataset", "view", "annotated_classes", "annotated_frames", "ed_frame", "es_frame",
  "source_frames", "reversed", "split"}}.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence

ECHO_LABELS = {"background": 0, "LV_epi": [1, 2], "LV_endo": [1], "ignore": 3}
ECHO_REGIONS_CLASS_ORDER = [2, 1]
ECHO_CLASSES = {"LV_epi": "left ventricle epicardium", "LV_endo": "left ventricle endocardium"}
ECHO_VIEWS = ["A2C", "A4C", "PSAX"]


class EchoMetadataError(ValueError):
    """dataset.json lacks or contradicts the echo keys."""


class EchoMetadata:
    def __init__(self, dataset_json: Mapping):
        missing = [k for k in ("echo_classes", "echo_views", "echo_case_metadata") if k not in dataset_json]
        if missing:
            raise EchoMetadataError(f"dataset.json lacks {missing}: convert the echo datasets with the plugin's "
                                    f"echo converters and build the collection with "
                                    f"nnUNetv2_universal_build_echo_collection")
        self.class_names: List[str] = [k for k, v in dataset_json["labels"].items()
                                       if k not in ("background", "ignore")]
        unknown = [c for c in self.class_names if c not in dataset_json["echo_classes"]]
        if unknown:
            raise EchoMetadataError(f"classes {unknown} have no text in echo_classes")
        self.class_texts: List[str] = [dataset_json["echo_classes"][c] for c in self.class_names]
        self.views: List[str] = list(dataset_json["echo_views"])
        self.cases: Mapping[str, dict] = dataset_json["echo_case_metadata"]
        for case, meta in self.cases.items():
            if meta.get("view") not in self.views:
                raise EchoMetadataError(f"case {case}: view {meta.get('view')!r} is not one of {self.views}")
            bad = [c for c in meta.get("annotated_classes", []) if c not in self.class_names]
            if bad or not meta.get("annotated_classes"):
                raise EchoMetadataError(f"case {case}: annotated_classes {meta.get('annotated_classes')} must be a "
                                        f"non-empty subset of {self.class_names}")

    def case(self, case_id: str) -> dict:
        try:
            return self.cases[case_id]
        except KeyError:
            raise EchoMetadataError(f"case {case_id} has no entry in echo_case_metadata") from None

    def view_indices(self, case_ids: Sequence[str]) -> List[int]:
        return [self.views.index(self.case(c)["view"]) for c in case_ids]

    def availability(self, case_ids: Sequence[str]) -> List[List[float]]:
        """(B, K) 1.0 where the case's dataset annotates the class."""
        return [[float(name in self.case(c)["annotated_classes"]) for name in self.class_names] for c in case_ids]
