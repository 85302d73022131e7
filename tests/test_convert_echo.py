"""Echo converters on fake source trees that mirror the real layouts: CAMUS (NIfTI re-release with database_split,
and the 2019 MHD release), EchoNet-Dynamic and EchoNet-Pediatric (AVI videos + CSV tracings)."""
from __future__ import annotations

import csv
import json
import os

import cv2
import numpy as np
import pytest

from fake_sources import read_array, set_raw, write_image
from nnunetv2_universal.dataset_conversion import camus, echonet_dynamic, echonet_pediatric
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError



def ellipse_labels(shape, scale):
    """CAMUS-style label map: LV cavity 1 inside myocardium 2, left atrium 3 below."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = ((yy - h * 0.4) / (h * 0.25 * scale)) ** 2 + ((xx - w / 2) / (w * 0.15 * scale)) ** 2
    label = np.zeros(shape, np.uint8)
    label[r <= 1.6] = 2
    label[r <= 1] = 1
    label[(yy > h * 0.75) & (abs(xx - w / 2) < w * 0.1)] = 3
    return label


def make_camus_nifti(root, patients=("patient0001", "patient0002", "patient0003"), frames=7, shape=(40, 30),
                     reversed_patient="patient0002"):
    base = os.path.join(root, "CAMUS_public")
    for p in patients:
        folder = os.path.join(base, "database_nifti", p)
        for view in ("2CH", "4CH"):
            seq = np.stack([(np.full(shape, 10 + 20 * t)) for t in range(frames)]).astype(np.uint8)
            seq[0, 0, 0] = 0  # a zero pixel must become 1
            ed, es = (1, frames) if p != reversed_patient else (frames, 1)
            gt_ed, gt_es = ellipse_labels(shape, 1.0), ellipse_labels(shape, 0.7)
            dense = np.stack([ellipse_labels(shape, 1.0 - 0.3 * t / (frames - 1)) for t in range(frames)])
            if p == reversed_patient:  # stored ES -> ED
                dense = dense[::-1]
            write_image(os.path.join(folder, f"{p}_{view}_half_sequence.nii.gz"), seq, (0.3, 0.15, 1.0))
            write_image(os.path.join(folder, f"{p}_{view}_half_sequence_gt.nii.gz"), dense, (0.3, 0.15, 1.0))
            write_image(os.path.join(folder, f"{p}_{view}_ED.nii.gz"), seq[0 if ed < es else -1], (0.3, 0.15))
            write_image(os.path.join(folder, f"{p}_{view}_ED_gt.nii.gz"), gt_ed, (0.3, 0.15))
            write_image(os.path.join(folder, f"{p}_{view}_ES_gt.nii.gz"), gt_es, (0.3, 0.15))
            with open(os.path.join(folder, f"Info_{view}.cfg"), "w") as f:
                f.write(f"ED: {ed}\nES: {es}\nNbFrame: {frames}\nSex: F\nAge: 60\nImageQuality: Good\nEF: 55\n"
                        f"FrameRate: 48.4\n")
    split = os.path.join(base, "database_split")
    os.makedirs(split, exist_ok=True)
    for file, members in (("subgroup_training.txt", patients[:1]), ("subgroup_validation.txt", patients[1:2]),
                          ("subgroup_testing.txt", patients[2:])):
        with open(os.path.join(split, file), "w") as f:
            f.write("\n".join(members) + "\n")
    with open(os.path.join(base, "database_nifti", "._patient0001"), "w") as f:
        f.write("junk")
    return base


def test_camus_nifti_release(tmp_path, monkeypatch):
    source = make_camus_nifti(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    camus.main(["-i", os.path.dirname(source)])
    folder = os.path.join(raw, "Dataset630_CAMUS")
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == [
        "CAMUS_patient0001_A2C_0000.nii.gz", "CAMUS_patient0001_A4C_0000.nii.gz",
        "CAMUS_patient0002_A2C_0000.nii.gz", "CAMUS_patient0002_A4C_0000.nii.gz"]
    assert sorted(os.listdir(os.path.join(folder, "labelsTs"))) == ["CAMUS_patient0003_A2C.nii.gz",
                                                                     "CAMUS_patient0003_A4C.nii.gz"]
    image = read_array(os.path.join(folder, "imagesTr", "CAMUS_patient0001_A2C_0000.nii.gz"))
    label = read_array(os.path.join(folder, "labelsTr", "CAMUS_patient0001_A2C.nii.gz"))
    assert image.shape == label.shape == (16, 224, 224) and image.dtype == np.uint8 and image.min() >= 1
    # 7 source frames -> 16: ED and ES are duplicated (output frames 0-1 and 14-15), the rest is ignore
    assert (label[2:14] == 3).all() and set(np.unique(label[0]).tolist()) == {0, 1, 2}  # LA -> 0
    assert (label[0] == 1).sum() > (label[15] == 1).sum()  # frame 0 is ED (larger cavity)
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["labels"] == {"background": 0, "LV_epi": [1, 2], "LV_endo": [1], "ignore": 3}
    meta = dataset["echo_case_metadata"]
    assert meta["CAMUS_patient0001_A4C"] == {
        "dataset": "CAMUS", "view": "A4C", "annotated_classes": ["LV_epi", "LV_endo"],
        "annotated_frames": [0, 1, 14, 15],
        "ed_frame": 0, "es_frame": 15, "source_frames": [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6],
        "reversed": False, "split": "train"}
    reversed_case = meta["CAMUS_patient0002_A2C"]
    assert reversed_case["reversed"] and reversed_case["source_frames"][0] == 6
    rev = read_array(os.path.join(folder, "imagesTr", "CAMUS_patient0002_A2C_0000.nii.gz"))
    assert rev[0].mean() > rev[15].mean()  # ED (bright last stored frame) first
    assert meta["CAMUS_patient0003_A2C"]["split"] == "test" and dataset["numTraining"] == 4
    assert json.load(open(os.path.join(folder, "splits_final.json"))) == [
        {"train": ["CAMUS_patient0001_A2C", "CAMUS_patient0001_A4C"],
         "val": ["CAMUS_patient0002_A2C", "CAMUS_patient0002_A4C"]}]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def test_camus_dense_labels_and_mhd_release(tmp_path, monkeypatch):
    raw = set_raw(monkeypatch, tmp_path)
    source = make_camus_nifti(str(tmp_path / "download"))
    camus.main(["-i", source, "--dense_camus_labels"])
    label = read_array(os.path.join(raw, "Dataset630_CAMUS", "labelsTr", "CAMUS_patient0001_A2C.nii.gz"))
    assert not (label == 3).any()

    mhd = tmp_path / "camus2019"
    for p, part in (("patient0001", "training"), ("patient0002", "training"), ("patient0451", "testing")):
        folder = mhd / part / p
        for view in ("2CH", "4CH"):
            seq = np.stack([np.full((30, 20), 5 + 10 * t) for t in range(12)]).astype(np.uint8)
            write_image(str(folder / f"{p}_{view}_sequence.mhd"), seq, (0.3, 0.15, 1.0), compress=False)
            if part == "training":
                write_image(str(folder / f"{p}_{view}_ED_gt.mhd"), ellipse_labels((30, 20), 1.0), (0.3, 0.15))
                write_image(str(folder / f"{p}_{view}_ES_gt.mhd"), ellipse_labels((30, 20), 0.7), (0.3, 0.15))
            (folder / f"Info_{view}.cfg").write_text("ED: 2\nES: 9\nNbFrame: 12\n")
    camus.main(["-i", str(mhd), "-d", "633"])
    folder = os.path.join(raw, "Dataset633_CAMUS")
    meta = json.load(open(os.path.join(folder, "dataset.json")))["echo_case_metadata"]
    assert meta["CAMUS_patient0001_A2C"]["source_frames"][0] == 1 and meta["CAMUS_patient0001_A2C"]["source_frames"][
        -1] == 8
    assert os.listdir(os.path.join(folder, "imagesTs")) and not os.path.isdir(os.path.join(folder, "labelsTs"))
    assert meta["CAMUS_patient0451_A4C"]["annotated_frames"] == []


def write_avi(path, frames):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 50, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def video(n=20, size=112):
    return np.stack([np.full((size, size), 30 + 8 * t, np.uint8) for t in range(n)])


def chord_rows(name, frame, half_width, cx=56, top=30, bottom=80):
    """Long axis + chords of a box-shaped LV of the given half width."""
    rows = [[name, cx, top, cx, bottom, frame]]
    for y in range(top + 2, bottom, 4):
        rows.append([name, cx - half_width, y, cx + half_width, y, frame])
    return rows


def make_dynamic(root):
    base = os.path.join(root, "EchoNet-Dynamic")
    files = [("0X1", "TRAIN", 3, 17), ("0X2", "TRAIN", 15, 4), ("0X3", "VAL", 2, 12), ("0X4", "TEST", 5, 18),
             ("0X5", "TRAIN", None, None)]  # 0X5: one traced frame only
    tracings = []
    for name, _, ed, es in files:
        write_avi(os.path.join(base, "Videos", f"{name}.avi"), video())
        if ed is not None:
            tracings += chord_rows(f"{name}.avi", ed, 20) + chord_rows(f"{name}.avi", es, 10)
        else:
            tracings += chord_rows(f"{name}.avi", 3, 20)
    with open(os.path.join(base, "FileList.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"])
        for name, split, _, _ in files:
            w.writerow([name, 60, 30, 80, 112, 112, 50, 20, split])
    with open(os.path.join(base, "VolumeTracings.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        w.writerows(tracings)
    return base


def test_echonet_dynamic(tmp_path, monkeypatch, capsys):
    source = make_dynamic(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    echonet_dynamic.main(["-i", source])
    assert "1 video(s) with fewer than two traced frames skipped" in capsys.readouterr().out
    folder = os.path.join(raw, "Dataset631_EchoNetDynamic")
    meta = json.load(open(os.path.join(folder, "dataset.json")))["echo_case_metadata"]
    assert sorted(meta) == ["DYN_0X1", "DYN_0X2", "DYN_0X3", "DYN_0X4"]
    assert meta["DYN_0X1"]["source_frames"][0] == 3 and meta["DYN_0X1"]["source_frames"][-1] == 17
    assert meta["DYN_0X2"]["reversed"] and meta["DYN_0X2"]["source_frames"][0] == 15
    assert meta["DYN_0X1"]["annotated_classes"] == ["LV_endo"] and meta["DYN_0X4"]["split"] == "test"
    label = read_array(os.path.join(folder, "labelsTr", "DYN_0X2.nii.gz"))
    assert set(np.unique(label).tolist()) == {0, 1, 3} and (label[0] == 1).sum() > 1.5 * (label[15] == 1).sum()
    # chord box of half width 20 px on the 112 grid -> about 2 x 41 px wide on the 224 grid
    assert 70 <= (label[0] == 1).sum(1).max() <= 90
    image = read_array(os.path.join(folder, "imagesTr", "DYN_0X2_0000.nii.gz"))
    assert image[0].mean() > image[15].mean()  # frame 15 (brighter) shown first
    assert json.load(open(os.path.join(folder, "splits_final.json"))) == [{"train": ["DYN_0X1", "DYN_0X2"],
                                                                          "val": ["DYN_0X3"]}]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def make_pediatric(root, nested=True):
    base = os.path.join(root, "pediatric_echo_avi", "pediatric_echo_avi" if nested else "")
    for view in ("A4C", "PSAX"):
        folder = os.path.join(base, view)
        files = [(f"CR32a-{view}1-000001.avi", 0), (f"CR33b-{view}2-000002.avi", 8), (f"CR34c-{view}3-000003.avi", 9)]
        rows = []
        for name, _ in files:
            write_avi(os.path.join(folder, "Videos", name), video(14))
            for frame, r in ((2, 25), (11, 12)):
                angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
                rows += [[name, int(56 + r * np.cos(a)), int(56 + r * np.sin(a)), frame] for a in angles]
            rows.append([name, 0, 0, "No Systolic"])
        with open(os.path.join(folder, "FileList.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["FileName", "EF", "Sex", "Age", "Weight", "Height", "Split"])
            w.writerows([[n, 60, "M", 5, 20, 110, fold] for n, fold in files])
        with open(os.path.join(folder, "VolumeTracings.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["FileName", "X", "Y", "Frame"])
            w.writerows(rows)
    return os.path.join(root, "pediatric_echo_avi")


def test_echonet_pediatric(tmp_path, monkeypatch):
    source = make_pediatric(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    echonet_pediatric.main(["-i", source])
    folder = os.path.join(raw, "Dataset632_EchoNetPediatric")
    meta = json.load(open(os.path.join(folder, "dataset.json")))["echo_case_metadata"]
    assert meta["PED_CR32a-A4C1-000001_A4C"]["split"] == "train" and meta["PED_CR33b-PSAX2-000002_PSAX"]["view"] == \
        "PSAX"
    assert meta["PED_CR34c-PSAX3-000003_PSAX"]["split"] == "test"
    assert meta["PED_CR32a-A4C1-000001_A4C"]["source_frames"][0] == 2
    splits = json.load(open(os.path.join(folder, "splits_final.json")))
    assert splits == [{"train": ["PED_CR32a-A4C1-000001_A4C", "PED_CR32a-PSAX1-000001_PSAX"],
                       "val": ["PED_CR33b-A4C2-000002_A4C", "PED_CR33b-PSAX2-000002_PSAX"]}]
    label = read_array(os.path.join(folder, "labelsTs", "PED_CR34c-A4C3-000003_A4C.nii.gz"))
    assert (label[0] == 1).sum() > (label[15] == 1).sum() > 0


def test_echo_converters_refuse_bad_input_and_leave_nothing(tmp_path, monkeypatch):
    raw = set_raw(monkeypatch, tmp_path)
    source = make_dynamic(str(tmp_path / "dyn"))
    with open(os.path.join(source, "VolumeTracings.csv"), "a", newline="") as f:
        csv.writer(f).writerows(chord_rows("0X9.avi", 1, 10))
    with pytest.raises(ConversionError, match="0X9.avi"):
        echonet_dynamic.convert_echonet_dynamic(source)
    source = make_dynamic(str(tmp_path / "dyn2"))
    with open(os.path.join(source, "VolumeTracings.csv"), "a", newline="") as f:
        csv.writer(f).writerows(chord_rows("0X3.avi", 40, 25))  # beyond the 20-frame video
    with pytest.raises(ConversionError, match="case DYN_0X3: tracing at frame 40"):
        echonet_dynamic.convert_echonet_dynamic(source)
    os.remove(os.path.join(source, "Videos", "0X1.avi"))
    camus_src = make_camus_nifti(str(tmp_path / "cam"))
    os.remove(os.path.join(camus_src, "database_nifti", "patient0002", "patient0002_4CH_ES_gt.nii.gz"))
    with pytest.raises(ConversionError, match="case CAMUS_patient0002_A4C"):
        camus.convert_camus(camus_src)
    ped = make_pediatric(str(tmp_path / "ped"), nested=False)
    with open(os.path.join(ped, "A4C", "FileList.csv"), "a", newline="") as f:
        csv.writer(f).writerow(["CR32a-A4C9-000009.avi", 60, "M", 5, 20, 110, 9])  # same patient, other fold
    with pytest.raises(ConversionError, match="patient CR32a"):
        echonet_pediatric.convert_echonet_pediatric(ped)
    with pytest.raises(ConversionError, match="does not exist"):
        camus.convert_camus(str(tmp_path / "nothing"))
    assert not os.path.isdir(raw) or os.listdir(raw) == []
