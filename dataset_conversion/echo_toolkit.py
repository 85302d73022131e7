"""Shared steps of the echo converters (CAMUS, EchoNet-Dynamic, EchoNet-Pediatric): one clip = one nnU-Net case.

Output of every echo converter (the echo model's contract, see nnunetv2_universal/echo/metadata.py):
- imagesTr|imagesTs/CASE_0000.nii.gz: uint8 (16, 224, 224), time first, frame 0 = ED, intensities 1..255 (0 -> 1,
  so nnU-Net's crop-to-nonzero never crops blank frames or the area outside the ultrasound sector), spacing 1;
- labelsTr|labelsTs/CASE.nii.gz: 0 background, 1 LV cavity, 2 myocardium, 3 ignore on every voxel of frames without
  an expert annotation (nnU-Net's ignore label: no gradient there);
- dataset.json: nnU-Net regions LV_epi = [1, 2], LV_endo = [1], ignore 3, plus echo_views, echo_classes and
  echo_case_metadata (dataset, view, annotated classes and frames, ED/ES positions, source frames, reversed, split);
- splits_final.json: the dataset's official train/val split (test cases only in imagesTs/labelsTs).
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunetv2_universal.dataset_conversion.toolkit import ConversionError
from nnunetv2_universal.echo.metadata import ECHO_CLASSES, ECHO_LABELS, ECHO_REGIONS_CLASS_ORDER, ECHO_VIEWS

FRAMES = 16
SIZE = 224
IGNORE = 3


def sample_indices(ed: int, es: int, frames: int = FRAMES) -> Tuple[List[int], bool]:
    """`frames` source indices from ED to ES (both included, ED first); duplicates when the span is shorter.
    Returns (indices, reversed): reversed when ES comes before ED in the file."""
    indices = np.round(np.linspace(ed, es, frames)).astype(int).tolist()
    return indices, es < ed


def resize(frame: np.ndarray, nearest: bool, size: int = SIZE) -> np.ndarray:
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def build_clip(frames: np.ndarray, masks: Mapping[int, np.ndarray], indices: Sequence[int], case: str,
               size: int = SIZE) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """frames (N, H, W) grey; masks {source frame: (H, W) labels 0/1/2}. Returns image (T, S, S) uint8 >= 1,
    label (T, S, S) with IGNORE on frames without a mask, and the annotated output frames."""
    if max(indices) >= len(frames) or min(indices) < 0:
        raise ConversionError(f"case {case}: frame {max(indices)} requested but the clip has {len(frames)} frames")
    image = np.stack([resize(np.asarray(frames[i], np.float32), False, size) for i in indices])
    image = np.clip(np.round(image), 1, 255).astype(np.uint8)
    label = np.full((len(indices), size, size), IGNORE, np.uint8)
    annotated = []
    for t, i in enumerate(indices):
        if i in masks:
            label[t] = resize(masks[i].astype(np.uint8), True, size)
            annotated.append(t)
    return image, label, annotated


def write_clip(folder: str, case: str, image: np.ndarray, label: Optional[np.ndarray], test: bool) -> None:
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    os.makedirs(join(folder, images), exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(image), join(folder, images, f"{case}_0000.nii.gz"), True)
    if label is not None:
        os.makedirs(join(folder, labels), exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(label), join(folder, labels, f"{case}.nii.gz"), True)


def case_metadata(dataset: str, view: str, classes: Sequence[str], annotated: Sequence[int], indices: Sequence[int],
                  es_source: int, reversed_: bool, split: str) -> dict:
    return {"dataset": dataset, "view": view, "annotated_classes": list(classes), "annotated_frames": list(annotated),
            "ed_frame": 0, "es_frame": int(max(t for t, i in enumerate(indices) if i == es_source)),
            "source_frames": [int(i) for i in indices], "reversed": bool(reversed_), "split": split}


def finish_echo_dataset(folder: str, name: str, metadata: Dict[str, dict], splits: List[dict], description: str,
                        reference: str) -> None:
    num_training = sum(m["split"] != "test" for m in metadata.values())
    if num_training == 0:
        raise ConversionError(f"{name}: no training clips found")
    generate_dataset_json(folder, {0: "US"}, dict(ECHO_LABELS), num_training, ".nii.gz",
                          regions_class_order=ECHO_REGIONS_CLASS_ORDER, dataset_name=name, description=description,
                          reference=reference, license="see the dataset's own terms",
                          converted_by="nnunetv2_universal", overwrite_image_reader_writer="SimpleITKIO",
                          echo_views=ECHO_VIEWS, echo_classes=ECHO_CLASSES, echo_case_metadata=metadata)
    save_json(splits, join(folder, "splits_final.json"), sort_keys=False)


def read_video(path: str, case: str) -> np.ndarray:
    """(F, H, W) uint8 grey frames of an AVI (EchoNet videos are grey replicated to 3 channels)."""
    if not os.path.isfile(path):
        raise ConversionError(f"case {case}: video {path} does not exist")
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., 0] if frame.ndim == 3 else frame)
    capture.release()
    if not frames:
        raise ConversionError(f"case {case}: cannot read any frame from {path}")
    return np.stack(frames)


def polygon_mask(xs: Sequence[float], ys: Sequence[float], shape: Tuple[int, int]) -> np.ndarray:
    """Filled polygon (row = y, column = x) with value 1 on the source grid."""
    mask = np.zeros(shape, np.uint8)
    points = np.stack([np.round(xs), np.round(ys)], 1).astype(np.int32)
    cv2.fillPoly(mask, [points], 1)
    return mask


def read_csv(path: str) -> List[dict]:
    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ed_es_from_traces(masks: Mapping[int, np.ndarray], case: str) -> Tuple[int, int]:
    """Two traced frames; the larger LV area is ED (EchoNet does not label which is which)."""
    if len(masks) < 2:
        raise ConversionError(f"case {case}: {len(masks)} traced frame(s), need ED and ES")
    ordered = sorted(masks, key=lambda f: int(masks[f].sum()))
    return ordered[-1], ordered[0]


def convert_traced_video(folder: str, video_path: str, case: str, dataset: str, view: str,
                         traces: Mapping[int, Tuple[Sequence[float], Sequence[float]]], split: str) -> Tuple[str, dict]:
    """EchoNet-style clip: polygons {frame: (xs, ys)} on the video grid -> ED/ES masks (larger area = ED) -> one
    16-frame clip written to imagesTr/labelsTr (imagesTs/labelsTs for test); returns (case, metadata)."""
    frames = read_video(video_path, case)
    for frame in traces:
        if frame >= len(frames):
            raise ConversionError(f"case {case}: tracing at frame {frame} but {video_path} has {len(frames)} frames")
    masks = {f: polygon_mask(xs, ys, frames.shape[1:]) for f, (xs, ys) in traces.items()}
    ed, es = ed_es_from_traces(masks, case)
    indices, reversed_ = sample_indices(ed, es)
    image, label, annotated = build_clip(frames, {ed: masks[ed], es: masks[es]}, indices, case)
    write_clip(folder, case, image, label, split == "test")
    return case, case_metadata(dataset, view, ["LV_endo"], annotated, indices, es, reversed_, split)
