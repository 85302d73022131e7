"""Shared steps of the echo converters (CAMUS, EchoNet-Dynamic, EchoNet-Pediatric): one clip = one nnU-Net case.

Output of every echo converter (the echo model's contract, see nnunetv2_universal/echo/metadata.py):
- imagesTr|imagesTs/CASE_0000.nii.gz: uint8 (16, 224, 224), time first, frame 0 = ED, intensities 1..255 (0 -> 1,
  so nnU-Net's crop-to-nonzero never crops blank frames or the area outside the ultrasound sector), spacing 1,
  origin 0, identity direction;
- labelsTr|labelsTs/CASE.nii.gz: uint8, 0 background, 1 LV cavity, 2 myocardium, 3 ignore on every voxel of frames
  without an expert annotation (nnU-Net's ignore label: no gradient there);
- dataset.json: nnU-Net regions LV_epi = [1, 2], LV_endo = [1], ignore 3 (regions_class_order [2, 1]) plus
  echo_views, echo_classes and echo_case_metadata (dataset, view, annotated classes and frames, ED/ES output
  positions, source frames, reversed, split) for every case, test cases included;
- splits_final.json: `--split paper` (default): the paper's Table 1 train/test partition, the training clips in 5
  patient-level folds (nnU-Net's cross-validation; fold `all` trains on every training clip as the paper does);
  `--split official`: one fold with the dataset's official train/val split. Test clips only in imagesTs/labelsTs.
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

from nnunetv2_universal.dataset_conversion.toolkit import FILE_ENDING, ConversionError, grouped_folds
from nnunetv2_universal.echo.metadata import ECHO_CLASSES, ECHO_LABELS, ECHO_REGIONS_CLASS_ORDER, ECHO_VIEWS

FRAMES = 16
SIZE = 224
IGNORE = 3
SPLITS = ("train", "val", "test")
SPLIT_MODES = ("paper", "official")  # paper: Table 1 of Kim et al. (train/test, no separate val)
PAPER_FOLDS = 5
CAVITY_ONLY = ["LV_endo"]  # EchoNet traces the LV cavity; the myocardium is unknown there
CAVITY_AND_WALL = ["LV_epi", "LV_endo"]  # CAMUS

# a polygon traced on the source video grid: (xs, ys) in pixels
Polygon = Tuple[Sequence[float], Sequence[float]]


# ------------------------------------------------------------------------------------------------ clips
def sample_indices(ed: int, es: int, frames: int = FRAMES) -> Tuple[List[int], bool]:
    """`frames` source indices spanning ED..ES, both included, ED first: round(linspace(first, last, frames)) over
    the span in file order, reversed when ES comes before ED in the file. Spans shorter than `frames` repeat indices.
    Returns (indices, reversed)."""
    first, last = min(ed, es), max(ed, es)
    indices = np.round(np.linspace(first, last, frames)).astype(int).tolist()
    reversed_ = es < ed
    return (indices[::-1] if reversed_ else indices), reversed_


def resize(frame: np.ndarray, nearest: bool, size: int = SIZE) -> np.ndarray:
    """(H, W) -> (size, size): nearest for label maps, bilinear for images."""
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def build_clip(frames: np.ndarray, masks: Mapping[int, np.ndarray], indices: Sequence[int], case: str,
               source: str, size: int = SIZE) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """frames (N, H, W) grey; masks {source frame: (H, W) label map 0/1/2}; indices: the output frames' source
    indices. Returns the image (T, size, size) uint8 in [1, 255], the label (T, size, size) uint8 with IGNORE on
    every output frame whose source frame has no mask, and the annotated output frames."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ConversionError(f"case {case}: {source} holds an array of shape {frames.shape}, expected (frames, "
                              f"height, width)")
    outside = [i for i in list(indices) + list(masks) if not 0 <= i < len(frames)]
    if outside:
        raise ConversionError(f"case {case}: frame {outside[0]} (0-based) requested but {source} has {len(frames)} "
                              f"frames")
    for i, mask in masks.items():
        if mask.shape != frames.shape[1:]:
            raise ConversionError(f"case {case}: the label of frame {i} has shape {mask.shape}, the frames of "
                                  f"{source} {frames.shape[1:]}")
    image = np.stack([resize(frames[i].astype(np.float32), False, size) for i in indices])
    image = np.clip(np.round(image), 1, 255).astype(np.uint8)  # 0 -> 1: crop_to_nonzero must see every voxel
    label = np.full((len(indices), size, size), IGNORE, np.uint8)
    annotated = []
    for t, i in enumerate(indices):
        if i in masks:
            label[t] = resize(masks[i].astype(np.uint8), True, size)
            annotated.append(t)
    return image, label, annotated


def write_clip(folder: str, case: str, image: np.ndarray, label: Optional[np.ndarray], test: bool) -> None:
    """imagesTr/CASE_0000 + labelsTr/CASE, or imagesTs/labelsTs for a test case; label None: image only. Arrays are
    (t, h, w); SimpleITK's defaults give spacing 1, origin 0 and identity direction."""
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    os.makedirs(join(folder, images), exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(image), join(folder, images, f"{case}_0000{FILE_ENDING}"), True)
    if label is not None:
        os.makedirs(join(folder, labels), exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(label), join(folder, labels, f"{case}{FILE_ENDING}"), True)


def case_metadata(dataset: str, view: str, classes: Sequence[str], annotated: Sequence[int], indices: Sequence[int],
                  es_source: int, reversed_: bool, split: str) -> dict:
    """One echo_case_metadata entry; es_frame is the last output frame showing the ES source frame."""
    return {"dataset": dataset, "view": view, "annotated_classes": list(classes),
            "annotated_frames": [int(t) for t in annotated], "ed_frame": 0,
            "es_frame": int(max(t for t, i in enumerate(indices) if i == es_source)),
            "source_frames": [int(i) for i in indices], "reversed": bool(reversed_), "split": split}


def paper_split(official: str) -> str:
    """The paper trains on the official train + val parts and tests on the official test part (Table 1)."""
    return "test" if official == "test" else "train"


def add_split_argument(parser) -> None:
    parser.add_argument("--split", choices=SPLIT_MODES, default="paper",
                        help="paper (default): Table 1 of the echo paper (train/test; the training clips in 5 "
                             "patient-level folds); official: the dataset's own train/val/test split")


def echo_splits(parts: Mapping[str, List[str]], groups: Optional[Mapping[str, str]], split_mode: str) -> List[dict]:
    """splits_final.json: official = one fold (train, val); paper = PAPER_FOLDS folds over the training clips, all
    clips of one patient (`groups`: case -> patient; default each clip its own) in one fold."""
    if split_mode == "official":
        return [{"train": parts["train"], "val": parts["val"]}]
    if split_mode != "paper":
        raise ValueError(f"split must be one of {SPLIT_MODES}, got {split_mode!r}")
    train = parts["train"] + parts["val"]
    patient = {c: (groups or {}).get(c, c) for c in train}
    n_folds = min(PAPER_FOLDS, len(set(patient.values())))
    if n_folds < 2:  # one patient: nothing to hold out; validate on the training clips (as nnU-Net's fold "all")
        return [{"train": sorted(train), "val": sorted(train)}]
    return grouped_folds(patient, n_folds)


def finish_echo_dataset(folder: str, folder_name: str, metadata: Mapping[str, dict], description: str,
                        reference: str, split_mode: str = "paper",
                        groups: Optional[Mapping[str, str]] = None) -> List[dict]:
    """dataset.json (nnU-Net's generate_dataset_json with the echo keys) and splits_final.json (see
    `echo_splits`); returns the splits."""
    parts = {p: sorted(c for c, m in metadata.items() if m["split"] == p) for p in SPLITS}
    if not parts["train"]:
        raise ConversionError(f"{folder_name}: no training clips found")
    generate_dataset_json(folder, {0: "US"}, dict(ECHO_LABELS), len(parts["train"]) + len(parts["val"]),
                          FILE_ENDING, regions_class_order=list(ECHO_REGIONS_CLASS_ORDER), dataset_name=folder_name,
                          description=description, reference=reference, license="see the dataset's own terms",
                          converted_by="nnunetv2_universal", overwrite_image_reader_writer="SimpleITKIO",
                          echo_views=list(ECHO_VIEWS), echo_classes=dict(ECHO_CLASSES),
                          echo_case_metadata={c: metadata[c] for c in sorted(metadata)}, echo_split=split_mode)
    splits = echo_splits(parts, groups, split_mode)
    save_json(splits, join(folder, "splits_final.json"), sort_keys=False)
    print(f"{folder_name} ({split_mode} split): {len(parts['train'])} train / {len(parts['val'])} val / "
          f"{len(parts['test'])} test clips; {len(splits)} fold(s)")
    return splits


# ------------------------------------------------------------------------------------- videos and tracings
def read_video(path: str, case: str) -> np.ndarray:
    """(F, H, W) uint8 grey frames of an AVI (EchoNet stores grey replicated to 3 channels: one channel is kept)."""
    if not os.path.isfile(path):
        raise ConversionError(f"case {case}: video {path} does not exist")
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        while capture.isOpened():
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame[..., 0] if frame.ndim == 3 else frame)
    finally:
        capture.release()
    if not frames:
        raise ConversionError(f"case {case}: cannot read any frame from {path} (not a readable video)")
    return np.stack(frames)


def polygon_mask(xs: Sequence[float], ys: Sequence[float], shape: Tuple[int, int]) -> np.ndarray:
    """Filled polygon with value 1 on the source grid (row = y, column = x; vertices rounded to pixels)."""
    mask = np.zeros(shape, np.uint8)
    points = np.stack([np.round(xs), np.round(ys)], 1).astype(np.int32)
    cv2.fillPoly(mask, [points], 1)
    return mask


def read_csv(path: str, columns: Sequence[str]) -> List[Dict[str, str]]:
    """The rows of a CSV file with (at least) the given header columns; each row also gets '_line' (its line
    number in the file) for error messages."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ConversionError(f"{path}: header {header} lacks column(s) {missing}")
        reader.fieldnames = header
        rows = []
        for row in reader:
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            row["_line"] = str(reader.line_num)
            rows.append(row)
    return rows


def video_stem(file_name: str) -> str:
    """'0X1A.avi' and '0X1A' -> '0X1A' (the CSV files disagree on the extension)."""
    return file_name[:-4] if file_name.lower().endswith(".avi") else file_name


def parse_number(value: str, what: str, path: str, row: Mapping[str, str], case: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConversionError(f"case {case}: {path} line {row['_line']}: {what} {value!r} is not a number") from None


def parse_frame(value: str, path: str, row: Mapping[str, str], case: str) -> int:
    if not value.isdigit():
        raise ConversionError(f"case {case}: {path} line {row['_line']}: Frame {value!r} is not a 0-based frame "
                              f"number")
    return int(value)


def ed_es_from_traces(masks: Mapping[int, np.ndarray], case: str) -> Tuple[int, int]:
    """The traced frame with the larger LV area is ED, the smaller ES (EchoNet does not label which is which)."""
    if len(masks) < 2:
        raise ConversionError(f"case {case}: {len(masks)} traced frame(s), need ED and ES")
    by_area = sorted(masks, key=lambda f: (int(masks[f].sum()), -f))
    return by_area[-1], by_area[0]


def convert_traced_video(folder: str, video_path: str, case: str, dataset: str, view: str,
                         traces: Mapping[int, Polygon], split: str) -> Tuple[str, dict]:
    """EchoNet-style clip: polygons {frame: (xs, ys)} on the video grid -> masks (larger area = ED) -> one 16-frame
    clip from ED to ES written to imagesTr/labelsTr (imagesTs/labelsTs for test); returns (case, metadata)."""
    frames = read_video(video_path, case)
    beyond = sorted(f for f in traces if f >= len(frames))
    if beyond:
        raise ConversionError(f"case {case}: tracing at frame {beyond[0]} but {video_path} has {len(frames)} frames")
    masks = {f: polygon_mask(xs, ys, frames.shape[1:]) for f, (xs, ys) in traces.items()}
    ed, es = ed_es_from_traces(masks, case)
    indices, reversed_ = sample_indices(ed, es)
    image, label, annotated = build_clip(frames, {ed: masks[ed], es: masks[es]}, indices, case, video_path)
    write_clip(folder, case, image, label, split == "test")
    return case, case_metadata(dataset, view, CAVITY_ONLY, annotated, indices, es, reversed_, split)


def report_skipped(name: str, skipped: Sequence[str]) -> None:
    """EchoNet videos with fewer than two traced frames are dropped; say how many (and a few names)."""
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(f"{name}: {len(skipped)} video(s) with fewer than two traced frames skipped ({shown})")
