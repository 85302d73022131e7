"""nnUNetv2_universal_predict_echo: predict echo clips or DICOM cines with a trained echo model, without a view id.

Inputs (-i, files or folders, mixed):
- nnU-Net clips (`CASE_0000.nii.gz`, 16 x 224 x 224, as the converters write them): writes `CASE.nii.gz` (labels 1
  LV cavity, 2 myocardium) like nnUNetv2_predict;
- echo DICOM cines (multi-frame ultrasound, e.g. as exported by echo machines): the frames are cropped to the
  ultrasound region (SequenceOfUltrasoundRegions, if present), cut into consecutive windows of the model's clip
  length (the last one padded by repeating its final frame), resized to the model's frame size and predicted;
  writes `NAME_masks.nii.gz` with one mask per original frame at the original frame geometry and
  `NAME_lv_area.csv` (LV cavity and myocardium area per frame, in pixels and mm^2 when the DICOM gives the
  physical pixel size, plus the window's voted view).
Every input's view as voted by the prompt pool's selected keys goes to `views.csv` (the evaluation command reads it
for the view accuracy). `--view` forces a view (only needed by the "view given" ablation).

Note for cines: the model was trained on ED->ES half cycles with frame 0 = ED; a cine window starts at an
arbitrary phase. The SAM query (view) does not depend on the phase; segmentation quality may.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.file_path_utilities import get_output_folder

from nnunetv2_universal.cli import command_parser, console_command
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.devices import usable_device
from nnunetv2_universal.image_checks import read_checked
from nnunetv2_universal.inference.predictor import plugin_trainers_found_first


class EchoInputError(ValueError):
    """An input file cannot be predicted (names the file)."""


def load_predictor(dataset: str, trainer: str, plans: str, configuration: str, folds: Sequence,
                   checkpoint: str, device: torch.device) -> nnUNetPredictor:
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    with plugin_trainers_found_first():
        predictor.initialize_from_trained_model_folder(get_output_folder(dataset, trainer, plans, configuration),
                                                       folds, checkpoint)
    if not hasattr(predictor.network, "view_votes"):
        raise ValueError(f"{trainer} does not train the echo network (no prompt pool to vote a view)")
    return predictor


def _predict_clip(predictor: nnUNetPredictor, clip: np.ndarray) -> Tuple[np.ndarray, int]:
    """clip (T, H, W) at the model's frame size -> (segmentation (T, H, W), voted view index)."""
    network = predictor.network
    network.view_votes = []
    try:
        seg = predictor.predict_single_npy_array(clip[None].astype(np.float32), {"spacing": [1.0, 1.0, 1.0]})
        votes = list(network.view_votes)
    finally:
        network.view_votes = None
    return np.asarray(seg), Counter(votes).most_common(1)[0][0]


# ---- DICOM cines
def read_cine(path: str) -> Tuple[np.ndarray, dict]:
    """(F, H, W) grey frames of an ultrasound cine and its geometry (region box, mm per pixel, frame time)."""
    import pydicom
    try:
        ds = pydicom.dcmread(path)
        frames = ds.pixel_array
    except Exception as e:
        raise EchoInputError(f"{path}: cannot read the DICOM pixel data ({e})") from e
    frames_count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames_count < 2:
        raise EchoInputError(f"{path}: a single-frame image, not a cine (NumberOfFrames = {frames_count})")
    if frames.ndim == 4:  # (F, H, W, 3): pydicom converts YBR to RGB
        frames = frames.astype(np.float32).mean(-1)
    frames = frames.astype(np.float32)
    h, w = frames.shape[1:]
    box, mm = (0, 0, w, h), None
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        r = regions[0]
        x0, y0 = max(0, int(r.RegionLocationMinX0)), max(0, int(r.RegionLocationMinY0))
        x1, y1 = min(w, int(r.RegionLocationMaxX1) + 1), min(h, int(r.RegionLocationMaxY1) + 1)
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            box = (x0, y0, x1, y1)
        if int(getattr(r, "PhysicalUnitsXDirection", 0)) == 3 and int(getattr(r, "PhysicalUnitsYDirection", 0)) == 3:
            mm = (float(r.PhysicalDeltaX) * 10.0, float(r.PhysicalDeltaY) * 10.0)  # cm -> mm
    frame_time = float(getattr(ds, "FrameTime", 0) or 0) or None
    return frames, {"box": box, "mm_per_pixel": mm, "frame_time_ms": frame_time, "shape": (h, w)}


def _resize(frames: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(frames[:, None], size=tuple(size), mode=mode, **kwargs)[:, 0]


def predict_cine(predictor: nnUNetPredictor, path: str, output_folder: str) -> Tuple[str, str]:
    """Predict every frame of a cine; returns (name, voted view)."""
    frames, geometry = read_cine(path)
    clip_length, *frame_size = predictor.configuration_manager.patch_size
    x0, y0, x1, y1 = geometry["box"]
    cropped = torch.from_numpy(frames[:, y0:y1, x0:x1])
    masks = np.zeros((len(frames), *geometry["shape"]), np.uint8)
    views: List[int] = []
    for start in range(0, len(frames), clip_length):
        index = np.minimum(np.arange(start, start + clip_length), len(frames) - 1)
        clip = _resize(cropped[index], frame_size, "bilinear").numpy()
        seg, view = _predict_clip(predictor, clip)
        seg = _resize(torch.from_numpy(seg.astype(np.float32)), (y1 - y0, x1 - x0), "nearest").numpy()
        n = min(clip_length, len(frames) - start)
        masks[start:start + n, y0:y1, x0:x1] = seg[:n]
        views += [view] * n
    names = predictor.dataset_json["echo_views"]
    name = os.path.splitext(os.path.basename(path))[0]
    image = sitk.GetImageFromArray(masks)
    mm = geometry["mm_per_pixel"] or (1.0, 1.0)
    image.SetSpacing((mm[0], mm[1], geometry["frame_time_ms"] or 1.0))
    sitk.WriteImage(image, join(output_folder, f"{name}_masks.nii.gz"))
    with open(join(output_folder, f"{name}_lv_area.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time_ms", "lv_cavity_pixels", "lv_cavity_mm2", "myocardium_pixels",
                         "myocardium_mm2", "view"])
        for i, mask in enumerate(masks):
            cavity, myo = int((mask == 1).sum()), int((mask == 2).sum())
            area = (lambda p: f"{p * mm[0] * mm[1]:.2f}") if geometry["mm_per_pixel"] else (lambda p: "")
            time = f"{i * geometry['frame_time_ms']:.1f}" if geometry["frame_time_ms"] else ""
            writer.writerow([i, time, cavity, area(cavity), myo, area(myo), names[views[i]]])
    return name, names[Counter(views).most_common(1)[0][0]]


# ---- nnU-Net clips
def predict_nifti_clip(predictor: nnUNetPredictor, path: str, output_folder: str) -> Tuple[str, str]:
    reader = predictor.plans_manager.image_reader_writer_class()
    data, properties = reader.read_images([path])
    name = os.path.basename(path)[:-len("_0000" + predictor.dataset_json["file_ending"])]
    network = predictor.network
    network.view_votes = []
    try:
        predictor.predict_single_npy_array(data, properties, None, join(output_folder, name), False)
        votes = list(network.view_votes)
    finally:
        network.view_votes = None
    return name, predictor.dataset_json["echo_views"][Counter(votes).most_common(1)[0][0]]


def _inputs(paths: Sequence[str], file_ending: str) -> List[str]:
    found = []
    for p in paths:
        if os.path.isdir(p):
            names = [f for f in sorted(os.listdir(p)) if not f.startswith(".")]
            extra = [f for f in names if f.endswith(file_ending) and not f.endswith("_0000" + file_ending)]
            if extra:
                raise EchoInputError(f"{join(p, extra[0])}: the echo model takes one channel (CASE_0000"
                                     f"{file_ending}, ultrasound grey values)")
            found += [join(p, f) for f in names if f.endswith("_0000" + file_ending) or f.lower().endswith(".dcm")]
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise EchoInputError(f"input {p} does not exist")
    if not found:
        raise EchoInputError(f"no clips (*_0000{file_ending}) or DICOM cines (*.dcm) in {list(paths)}")
    return found


def check_input(path: str, file_ending: str) -> None:
    """Read and check one input before anything is predicted: a clip must be a readable (frames, H, W) image with
    an orthonormal direction and finite values, a cine readable DICOM pixel data with several frames."""
    if not path.endswith(file_ending):
        read_cine(path)
        return
    image = read_checked(path, os.path.basename(path), EchoInputError)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise EchoInputError(f"{path}: expected a single-channel (frames, height, width) clip, got "
                             f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} component(s)")


def predict_echo(inputs: Sequence[str], output_folder: str, predictor: nnUNetPredictor,
                 view: Optional[str] = None) -> List[Tuple[str, str]]:
    views = predictor.dataset_json["echo_views"]
    if view is not None:
        if view not in views:
            raise EchoInputError(f"unknown view {view!r}; the model knows {views}")
        predictor.network.condition = Condition(view=views.index(view))
    file_ending = predictor.dataset_json["file_ending"]
    paths = _inputs(inputs, file_ending)
    for path in paths:  # every input is checked before the first is predicted: no half-written output folder
        check_input(path, file_ending)
    maybe_mkdir_p(output_folder)
    results = []
    for path in paths:
        if path.endswith(file_ending):
            results.append(predict_nifti_clip(predictor, path, output_folder))
        else:
            results.append(predict_cine(predictor, path, output_folder))
        print(f"{results[-1][0]}: view {results[-1][1]}")
    with open(join(output_folder, "views.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "voted_view"])
        writer.writerows(results)
    return results


@console_command
def main(argv=None):
    parser = command_parser(description="Predict echo clips (nnU-Net format) or DICOM cines with a trained "
                                        "echo model; no view id needed.")
    parser.add_argument("-i", nargs="+", required=True, help="clip files/folders (*_0000.nii.gz) and/or DICOM cines")
    parser.add_argument("-o", required=True, help="output folder")
    parser.add_argument("-d", required=True, help="dataset id or name of the echo collection the model was trained on")
    parser.add_argument("-tr", default="EchoPromptTrainer", help="trainer")
    parser.add_argument("-p", default="EchoPlans", help="plans identifier")
    parser.add_argument("-c", default="3d_fullres", help="configuration")
    parser.add_argument("-f", nargs="+", default=["0"], help="folds (default 0)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name in each fold folder")
    parser.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"),
                        help="device; cuda without a GPU falls back to the CPU with a notice")
    parser.add_argument("--view", default=None, help="force a view (ablation 'view given' only)")
    args = parser.parse_args(argv)
    folds = [f if f == "all" else int(f) for f in args.f]
    get_output_folder(args.d, args.tr, args.p, args.c)  # an unknown dataset is the one line, before any notice
    device = usable_device(args.device, "predicting")
    predictor = load_predictor(args.d, args.tr, args.p, args.c, folds, args.chk, device)
    predict_echo(args.i, args.o, predictor, args.view)  # EchoInputError: one line, exit 2 (console_command)


if __name__ == "__main__":
    main()
