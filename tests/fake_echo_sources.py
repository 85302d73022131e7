"""Tiny fake downloads of the echo datasets in their real layouts: CAMUS (NIfTI re-release with database_split, and
the 2019 MHD/RAW release), EchoNet-Dynamic and EchoNet-Pediatric (MJPG AVI videos, 112 x 112, 3 channels, with the
CSV files). Each builder returns the folder to pass as -i; module constants say what the tests expect."""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from fake_sources import write_image

CAMUS_SHAPE = (40, 30)  # (H, W) of a CAMUS frame here (real: ~ 800 x 600)
CAMUS_SPACING = (0.31, 0.154)


def camus_labels(scale: float, shape: Tuple[int, int] = CAMUS_SHAPE) -> np.ndarray:
    """A CAMUS label map: LV cavity 1 inside the myocardium 2, the left atrium 3 below; larger scale = larger LV."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = ((yy - h * 0.4) / (h * 0.25 * scale)) ** 2 + ((xx - w / 2) / (w * 0.2 * scale)) ** 2
    label = np.zeros(shape, np.uint8)
    label[r <= 1.6] = 2
    label[r <= 1] = 1
    label[(yy > h * 0.8) & (abs(xx - w / 2) < w * 0.1)] = 3
    return label


def camus_frames(n: int, shape: Tuple[int, int] = CAMUS_SHAPE, first_value: int = 10) -> np.ndarray:
    """n frames, frame t uniformly first_value + 20 t except a zero strip (the area outside the sector)."""
    frames = np.stack([np.full(shape, first_value + 20 * t) for t in range(n)]).astype(np.uint8)
    frames[:, :, :3] = 0
    return frames


def write_cfg(path: str, ed: int, es: int, frames: int) -> None:
    with open(path, "w") as f:
        f.write(f"ED: {ed}\nES: {es}\nNbFrame: {frames}\nSex: F\nAge: 61\nImageQuality: Good\nEF: 55.2\n"
                f"FrameRate: 48.4\n")


def make_camus_nifti(root: str, frames: int = 7, reversed_patient: str = "patient0002") -> str:
    """CAMUS_public with patient0001 (training), patient0002 (validation; stored ES -> ED, cfg ED > ES) and
    patient0003 (testing). Each half sequence holds `frames` frames, brighter with time in file order. Returns
    CAMUS_public."""
    base = os.path.join(root, "CAMUS_public")
    patients = {"training": ["patient0001"], "validation": ["patient0002"], "testing": ["patient0003"]}
    for p in sum(patients.values(), []):
        folder = os.path.join(base, "database_nifti", p)
        for view in ("2CH", "4CH"):
            stored_reversed = p == reversed_patient
            seq = camus_frames(frames)
            ed, es = (frames, 1) if stored_reversed else (1, frames)
            dense = np.stack([camus_labels(1.0 - 0.4 * t / (frames - 1)) for t in range(frames)])  # ED -> ES
            if stored_reversed:
                dense = dense[::-1]
            prefix = os.path.join(folder, f"{p}_{view}")
            write_image(f"{prefix}_half_sequence.nii.gz", seq, CAMUS_SPACING + (1.0,))
            write_image(f"{prefix}_half_sequence_gt.nii.gz", dense, CAMUS_SPACING + (1.0,))
            write_image(f"{prefix}_ED.nii.gz", seq[ed - 1], CAMUS_SPACING)
            write_image(f"{prefix}_ES.nii.gz", seq[es - 1], CAMUS_SPACING)
            write_image(f"{prefix}_ED_gt.nii.gz", camus_labels(1.0), CAMUS_SPACING)
            write_image(f"{prefix}_ES_gt.nii.gz", camus_labels(0.6), CAMUS_SPACING)
            write_cfg(os.path.join(folder, f"Info_{view}.cfg"), ed, es, frames)
    os.makedirs(os.path.join(base, "database_split"), exist_ok=True)
    for part, members in patients.items():
        with open(os.path.join(base, "database_split", f"subgroup_{part}.txt"), "w") as f:
            f.write("\n".join(members) + "\n")
    with open(os.path.join(base, "database_nifti", "._patient0001"), "wb") as f:  # macOS resource-fork junk
        f.write(b"\x00\x05\x16\x07")
    return base


# patient -> (1-based ED, 1-based ES) of the 12-frame MHD sequences
CAMUS_MHD_PATIENTS = {"patient0001": (2, 9), "patient0002": (1, 12), "patient0003": (10, 3)}
CAMUS_MHD_FRAMES = 12


def make_camus_mhd(root: str) -> str:
    """The 2019 release: training/ (three patients with _gt files; patient0003 has ED after ES) and testing/
    (patient0451, no _gt). Returns the release folder (holding training/ and testing/)."""
    base = os.path.join(root, "camus_2019")
    patients = [(p, "training", ed_es) for p, ed_es in CAMUS_MHD_PATIENTS.items()]
    patients.append(("patient0451", "testing", (1, 11)))
    for p, part, (ed, es) in patients:
        folder = os.path.join(base, part, p)
        for view in ("2CH", "4CH"):
            seq = camus_frames(CAMUS_MHD_FRAMES, first_value=5)
            prefix = os.path.join(folder, f"{p}_{view}")
            write_image(f"{prefix}_sequence.mhd", seq, CAMUS_SPACING + (1.0,), compress=False)
            write_image(f"{prefix}_ED.mhd", seq[ed - 1], CAMUS_SPACING, compress=False)
            write_image(f"{prefix}_ES.mhd", seq[es - 1], CAMUS_SPACING, compress=False)
            if part == "training":
                write_image(f"{prefix}_ED_gt.mhd", camus_labels(1.0), CAMUS_SPACING, compress=False)
                write_image(f"{prefix}_ES_gt.mhd", camus_labels(0.6), CAMUS_SPACING, compress=False)
            write_cfg(os.path.join(folder, f"Info_{view}.cfg"), ed, es, CAMUS_MHD_FRAMES)
    return base


def write_avi(path: str, frames: np.ndarray, fps: int = 50) -> None:
    """(F, H, W) grey uint8 -> an MJPG .avi with the grey replicated to 3 channels (as EchoNet ships it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def echo_video(n: int, size: int = 112) -> np.ndarray:
    """n frames, frame t uniformly 30 + 8 t inside a centre square, black outside (the masked-out corners)."""
    frames = np.zeros((n, size, size), np.uint8)
    for t in range(n):
        frames[t, 8:-8, 8:-8] = 30 + 8 * t
    return frames


def chord_rows(file_name: str, frame: int, half_width: int, cx: int = 56, top: int = 30,
               bottom: int = 80) -> List[list]:
    """VolumeTracings rows of one traced frame of a box-shaped LV: the long axis, then horizontal chords."""
    rows = [[file_name, cx, top, cx, bottom, frame]]
    for y in range(top + 2, bottom, 4):
        rows.append([file_name, cx - half_width, y, cx + half_width, y, frame])
    return rows


# FileName -> (Split, ED frame, ES frame); None: a single traced frame (skipped by the converter)
DYNAMIC_VIDEOS = {"0X1A": ("TRAIN", 3, 17), "0X2B": ("TRAIN", 15, 4), "0X3C": ("VAL", 2, 8),
                  "0X4D": ("TEST", 5, 18), "0X5E": ("TRAIN", None, None)}
DYNAMIC_FRAMES = 20
DYNAMIC_ED_HALF_WIDTH, DYNAMIC_ES_HALF_WIDTH = 20, 10


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_dynamic(root: str) -> str:
    """EchoNet-Dynamic with DYNAMIC_VIDEOS (20-frame videos; 0X2B traced ED after ES; 0X3C spans 7 frames; 0X5E has
    one traced frame). The ES rows come first in the file. Returns EchoNet-Dynamic/."""
    base = os.path.join(root, "EchoNet-Dynamic")
    tracings = []
    for name, (_, ed, es) in DYNAMIC_VIDEOS.items():
        write_avi(os.path.join(base, "Videos", f"{name}.avi"), echo_video(DYNAMIC_FRAMES))
        if ed is None:
            tracings += chord_rows(f"{name}.avi", 3, DYNAMIC_ED_HALF_WIDTH)
        else:
            tracings += chord_rows(f"{name}.avi", es, DYNAMIC_ES_HALF_WIDTH)
            tracings += chord_rows(f"{name}.avi", ed, DYNAMIC_ED_HALF_WIDTH)
    write_csv(os.path.join(base, "FileList.csv"),
              ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"],
              [[name, 61.2, 30.1, 77.5, 112, 112, 50, DYNAMIC_FRAMES, split]
               for name, (split, _, _) in DYNAMIC_VIDEOS.items()])
    write_csv(os.path.join(base, "VolumeTracings.csv"), ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], tracings)
    with open(os.path.join(base, "Videos", "._0X1A.avi"), "wb") as f:
        f.write(b"\x00\x05\x16\x07")
    return base


PEDIATRIC_FRAMES = 14


def pediatric_files(view: str) -> Dict[str, Tuple[int, Tuple[int, int]]]:
    """FileName -> (fold, (ED frame, ES frame)); the second video is traced with ED after ES; the last one has only
    a diastolic tracing ("No Systolic") and is skipped."""
    return {f"CR32a-{view}1-000001.avi": (0, (2, 11)), f"CR33b-{view}2-000002.avi": (8, (12, 3)),
            f"CR34c-{view}3-000003.avi": (9, (1, 13)), f"CR35d-{view}4-000004.avi": (5, (4, None))}


def circle_rows(file_name: str, frame, radius: int) -> List[list]:
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    return [[file_name, int(round(56 + radius * np.cos(a))), int(round(56 + radius * np.sin(a))), frame]
            for a in angles]


def make_pediatric(root: str, nested: bool = True) -> str:
    """pediatric_echo_avi/[pediatric_echo_avi/]{A4C,PSAX}/ with FileList.csv, VolumeTracings.csv (one vertex per row,
    "No Systolic" / "No Diastolic" rows) and Videos/. Returns the outer pediatric_echo_avi/."""
    outer = os.path.join(root, "pediatric_echo_avi")
    base = os.path.join(outer, "pediatric_echo_avi") if nested else outer
    for view in ("A4C", "PSAX"):
        folder = os.path.join(base, view)
        rows = []
        for name, (_, (ed, es)) in pediatric_files(view).items():
            write_avi(os.path.join(folder, "Videos", name), echo_video(PEDIATRIC_FRAMES))
            rows += circle_rows(name, ed, 25)
            if es is None:
                rows.append([name, 0, 0, "No Systolic"])
            else:
                rows += circle_rows(name, es, 12)
                rows.append([name, 0, 0, "No Diastolic"])
        write_csv(os.path.join(folder, "FileList.csv"), ["FileName", "EF", "Sex", "Age", "Weight", "Height", "Split"],
                  [[name, 58.3, "M", 6, 21.5, 115, fold] for name, (fold, _) in pediatric_files(view).items()])
        write_csv(os.path.join(folder, "VolumeTracings.csv"), ["FileName", "X", "Y", "Frame"], rows)
    with open(os.path.join(base, "._A4C"), "wb") as f:
        f.write(b"\x00\x05\x16\x07")
    return outer
