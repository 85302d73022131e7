"""The echo converters (CAMUS NIfTI and MHD releases, EchoNet-Dynamic, EchoNet-Pediatric) on fake downloads that
mirror the real layouts (tests/fake_echo_sources.py): the clip format the echo model relies on (16 x 224 x 224
uint8 >= 1, ED first, ignore on un-annotated frames), dataset.json's echo keys, the official splits, nnU-Net's
dataset check, and bad input (an error naming the case; nothing left in nnUNet_raw)."""
from __future__ import annotations

import csv
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

import fake_echo_sources as fake
from fake_sources import set_raw, write_image
from nnunetv2_universal.dataset_conversion import camus, echonet_dynamic, echonet_pediatric
from nnunetv2_universal.dataset_conversion.echo_toolkit import sample_indices
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

LABELS = {"background": 0, "LV_epi": [1, 2], "LV_endo": [1], "ignore": 3}


def expected_sources(ed: int, es: int) -> list:
    """The contract: round(linspace) over the ED..ES span in file order, reversed when ED comes after ES."""
    span = np.round(np.linspace(min(ed, es), max(ed, es), 16)).astype(int).tolist()
    return span[::-1] if ed > es else span


def load_dataset(folder):
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset = json.load(f)
    with open(os.path.join(folder, "splits_final.json")) as f:
        splits = json.load(f)
    return dataset, splits


def read_clip(folder, case, test=False, labelled=True):
    """(image array, label array or None); checks the geometry the echo model expects."""
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    image = sitk.ReadImage(os.path.join(folder, images, f"{case}_0000.nii.gz"))
    assert image.GetSpacing() == (1.0, 1.0, 1.0) and image.GetOrigin() == (0.0, 0.0, 0.0)
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    array = sitk.GetArrayFromImage(image)
    assert array.shape == (16, 224, 224) and array.dtype == np.uint8 and array.min() >= 1
    label_path = os.path.join(folder, labels, f"{case}.nii.gz")
    if not labelled:
        assert not os.path.exists(label_path)
        return array, None
    label = sitk.GetArrayFromImage(sitk.ReadImage(label_path))
    assert label.shape == (16, 224, 224) and label.dtype == np.uint8
    return array, label


def check_clip(folder, case, meta, ed, es, values, test=False):
    """Metadata, ignore frames and ED-first for a labelled clip whose source ED/ES frames are ed/es (0-based)."""
    image, label = read_clip(folder, case, test)
    sources = expected_sources(ed, es)
    annotated = [t for t, i in enumerate(sources) if i in (ed, es)]
    assert meta["source_frames"] == sources and meta["reversed"] == (ed > es)
    assert meta["ed_frame"] == 0 and meta["es_frame"] == max(t for t, i in enumerate(sources) if i == es)
    assert meta["annotated_frames"] == annotated
    for t in range(16):
        if t in annotated:
            assert set(np.unique(label[t]).tolist()) == values, (case, t)
        else:
            assert (label[t] == 3).all(), (case, t)
    assert (label[0] == 1).sum() > 1.5 * (label[meta["es_frame"]] == 1).sum() > 0  # frame 0 = ED (larger LV)
    return image, label


def verify(folder):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def assert_nothing_written(raw):
    assert not os.path.isdir(raw) or os.listdir(raw) == [], os.listdir(raw)


def test_sample_indices_span_duplicates_and_reversal():
    assert sample_indices(0, 15) == (list(range(16)), False)
    assert sample_indices(4, 15) == (expected_sources(4, 15), False)
    indices, reversed_ = sample_indices(15, 4)
    assert reversed_ and indices[0] == 15 and indices[-1] == 4 and indices == sorted(indices, reverse=True)
    assert sample_indices(0, 6)[0] == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6]  # 7 frames -> duplicates


# --------------------------------------------------------------------------------------------------------- CAMUS
def test_camus_nifti_release(tmp_path, monkeypatch):
    source = fake.make_camus_nifti(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    camus.main(["-i", os.path.dirname(source), "--split", "official"])  # the parent of CAMUS_public is found too
    folder = os.path.join(raw, "Dataset630_CAMUS")
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == [
        "CAMUS_patient0001_A2C_0000.nii.gz", "CAMUS_patient0001_A4C_0000.nii.gz",
        "CAMUS_patient0002_A2C_0000.nii.gz", "CAMUS_patient0002_A4C_0000.nii.gz"]
    assert sorted(os.listdir(os.path.join(folder, "imagesTs"))) == ["CAMUS_patient0003_A2C_0000.nii.gz",
                                                                     "CAMUS_patient0003_A4C_0000.nii.gz"]
    assert sorted(os.listdir(os.path.join(folder, "labelsTs"))) == ["CAMUS_patient0003_A2C.nii.gz",
                                                                     "CAMUS_patient0003_A4C.nii.gz"]
    dataset, splits = load_dataset(folder)
    assert dataset["labels"] == LABELS and dataset["regions_class_order"] == [2, 1]
    assert dataset["channel_names"] == {"0": "US"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["overwrite_image_reader_writer"] == "SimpleITKIO" and dataset["numTraining"] == 4
    assert dataset["echo_views"] == ["A2C", "A4C", "PSAX"]
    assert dataset["echo_classes"] == {"LV_epi": "left ventricle epicardium", "LV_endo": "left ventricle endocardium"}
    meta = dataset["echo_case_metadata"]
    assert sorted(meta) == [f"CAMUS_patient000{p}_{v}" for p in (1, 2, 3) for v in ("A2C", "A4C")]
    # 7 source frames: ED and ES each on two output frames, everything in between ignore; LA (3) -> background
    assert meta["CAMUS_patient0001_A4C"] == {
        "dataset": "CAMUS", "view": "A4C", "annotated_classes": ["LV_epi", "LV_endo"],
        "annotated_frames": [0, 1, 14, 15], "ed_frame": 0, "es_frame": 15,
        "source_frames": [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6], "reversed": False, "split": "train"}
    image, label = check_clip(folder, "CAMUS_patient0001_A2C", meta["CAMUS_patient0001_A2C"], 0, 6, {0, 1, 2})
    expected_ed = cv2.resize(np.where(fake.camus_labels(1.0) == 3, 0, fake.camus_labels(1.0)).astype(np.uint8),
                             (224, 224), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(label[0], expected_ed)
    assert image[0, 112, 112] == 10 and image[15, 112, 112] == 130 and image[:, :, 0].max() == 1  # zeros -> 1
    # patient0002 is stored ES -> ED (cfg ED 7, ES 1): reversed, ED (the last stored, brightest frame) first
    image, _ = check_clip(folder, "CAMUS_patient0002_A2C", meta["CAMUS_patient0002_A2C"], 6, 0, {0, 1, 2})
    assert image[0, 112, 112] == 130 and image[15, 112, 112] == 10
    assert meta["CAMUS_patient0002_A2C"]["split"] == "val"
    check_clip(folder, "CAMUS_patient0003_A4C", meta["CAMUS_patient0003_A4C"], 0, 6, {0, 1, 2}, test=True)
    assert meta["CAMUS_patient0003_A4C"]["split"] == "test"
    assert splits == [{"train": ["CAMUS_patient0001_A2C", "CAMUS_patient0001_A4C"],
                       "val": ["CAMUS_patient0002_A2C", "CAMUS_patient0002_A4C"]}]
    verify(folder)


def test_camus_dense_labels_keep_the_interpolated_frames(tmp_path, monkeypatch):
    source = fake.make_camus_nifti(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    camus.main(["-i", source, "--dense_camus_labels"])
    folder = os.path.join(raw, "Dataset630_CAMUS")
    meta = load_dataset(folder)[0]["echo_case_metadata"]
    for case in ("CAMUS_patient0001_A2C", "CAMUS_patient0002_A4C"):
        _, label = read_clip(folder, case)
        assert not (label == 3).any() and meta[case]["annotated_frames"] == list(range(16))
        areas = [(label[t] == 1).sum() for t in range(16)]
        assert areas == sorted(areas, reverse=True) and areas[0] > areas[-1]  # shrinking ED -> ES, also reversed


def test_camus_mhd_release(tmp_path, monkeypatch, capsys):
    source = fake.make_camus_mhd(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    camus.main(["-i", source, "-d", "640", "--split", "official"])
    assert "seeded patient-level 90/10" in capsys.readouterr().out
    folder = os.path.join(raw, "Dataset640_CAMUS")
    dataset, splits = load_dataset(folder)
    meta = dataset["echo_case_metadata"]
    for patient, (ed, es) in fake.CAMUS_MHD_PATIENTS.items():  # 1-based cfg numbers -> frames ED-1 .. ES-1
        split = meta[f"CAMUS_{patient}_A2C"]["split"]
        assert split in ("train", "val") and meta[f"CAMUS_{patient}_A4C"]["split"] == split  # patient level
        check_clip(folder, f"CAMUS_{patient}_A2C", meta[f"CAMUS_{patient}_A2C"], ed - 1, es - 1, {0, 1, 2})
    image, _ = read_clip(folder, "CAMUS_patient0003_A4C")
    assert image[0, 112, 112] == 5 + 20 * 9  # ED = stored frame 10 (1-based) shown first
    assert len(splits[0]["val"]) == 2 and len(splits[0]["train"]) == 4 and dataset["numTraining"] == 6
    # testing/ has no ground truth: imagesTs only, no labelsTs, nothing annotated
    assert sorted(os.listdir(os.path.join(folder, "imagesTs"))) == ["CAMUS_patient0451_A2C_0000.nii.gz",
                                                                     "CAMUS_patient0451_A4C_0000.nii.gz"]
    assert not os.path.isdir(os.path.join(folder, "labelsTs"))
    read_clip(folder, "CAMUS_patient0451_A2C", test=True, labelled=False)
    assert meta["CAMUS_patient0451_A2C"]["annotated_frames"] == [] and meta["CAMUS_patient0451_A2C"]["split"] == "test"
    verify(folder)


# -------------------------------------------------------------------------------------------------- EchoNet
def test_echonet_dynamic(tmp_path, monkeypatch, capsys):
    source = fake.make_dynamic(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    echonet_dynamic.main(["-i", source, "--split", "official"])
    assert "1 video(s) with fewer than two traced frames skipped (0X5E)" in capsys.readouterr().out
    folder = os.path.join(raw, "Dataset631_EchoNetDynamic")
    dataset, splits = load_dataset(folder)
    meta = dataset["echo_case_metadata"]
    assert sorted(meta) == ["DYN_0X1A", "DYN_0X2B", "DYN_0X3C", "DYN_0X4D"]
    assert splits == [{"train": ["DYN_0X1A", "DYN_0X2B"], "val": ["DYN_0X3C"]}] and dataset["numTraining"] == 3
    for name, (split, ed, es) in fake.DYNAMIC_VIDEOS.items():
        if ed is None:
            continue
        case = f"DYN_{name}"
        assert meta[case]["dataset"] == "EchoNetDynamic" and meta[case]["view"] == "A4C"
        assert meta[case]["annotated_classes"] == ["LV_endo"] and meta[case]["split"] == split.lower()
        image, label = check_clip(folder, case, meta[case], ed, es, {0, 1}, test=split == "TEST")
        # box LV of half width 20 px on the 112 grid (x 36..76, chords y 32..76) -> doubled on the 224 grid
        rows, cols = np.nonzero(label[0] == 1)
        assert abs(cols.min() - 72) <= 2 and abs(cols.max() - 153) <= 2 and abs(rows.min() - 64) <= 2
        assert abs(int(image[0, 112, 112]) - (30 + 8 * ed)) <= 3 and image[:, 0, 0].max() <= 2  # black -> 1
    assert meta["DYN_0X2B"]["reversed"] and meta["DYN_0X2B"]["source_frames"][:2] == [15, 14]
    assert meta["DYN_0X3C"]["annotated_frames"] == [0, 1, 14, 15]  # a 7-frame span repeats ED and ES
    assert os.listdir(os.path.join(folder, "labelsTs")) == ["DYN_0X4D.nii.gz"]
    verify(folder)


@pytest.mark.parametrize("nested", [True, False])
def test_echonet_pediatric(tmp_path, monkeypatch, capsys, nested):
    source = fake.make_pediatric(str(tmp_path / "download"), nested=nested)
    raw = set_raw(monkeypatch, tmp_path)
    echonet_pediatric.main(["-i", source if nested else os.path.dirname(source), "--split", "official"])
    assert "2 video(s) with fewer than two traced frames skipped" in capsys.readouterr().out
    folder = os.path.join(raw, "Dataset632_EchoNetPediatric")
    dataset, splits = load_dataset(folder)
    meta = dataset["echo_case_metadata"]
    assert len(meta) == 6 and dataset["numTraining"] == 4
    assert splits == [{"train": ["PED_CR32a-A4C1-000001_A4C", "PED_CR32a-PSAX1-000001_PSAX"],
                       "val": ["PED_CR33b-A4C2-000002_A4C", "PED_CR33b-PSAX2-000002_PSAX"]}]
    assert sorted(os.listdir(os.path.join(folder, "labelsTs"))) == ["PED_CR34c-A4C3-000003_A4C.nii.gz",
                                                                     "PED_CR34c-PSAX3-000003_PSAX.nii.gz"]
    for view in ("A4C", "PSAX"):
        for name, (fold, (ed, es)) in fake.pediatric_files(view).items():
            case = f"PED_{name[:-4]}_{view}"
            if es is None:
                assert case not in meta
                continue
            split = "train" if fold <= 7 else "val" if fold == 8 else "test"
            assert meta[case]["view"] == view and meta[case]["split"] == split
            assert meta[case]["dataset"] == "EchoNetPediatric" and meta[case]["annotated_classes"] == ["LV_endo"]
            check_clip(folder, case, meta[case], ed, es, {0, 1}, test=split == "test")
    assert meta["PED_CR33b-PSAX2-000002_PSAX"]["reversed"]
    if nested:  # the output does not depend on the layout; nnU-Net's check (a worker pool, ~3 s) runs once
        verify(folder)


def test_echonet_with_worker_processes_and_overwrite(tmp_path, monkeypatch):
    source = fake.make_dynamic(str(tmp_path / "download"))
    raw = set_raw(monkeypatch, tmp_path)
    echonet_dynamic.main(["-i", source, "-np", "2"])
    with pytest.raises(FileExistsError, match="--overwrite"):
        echonet_dynamic.main(["-i", source])
    echonet_dynamic.main(["-i", source, "--overwrite"])
    assert os.listdir(raw) == ["Dataset631_EchoNetDynamic"]
    os.remove(os.path.join(source, "Videos", "0X3C.avi"))  # an error inside a worker reaches the caller
    with pytest.raises(ConversionError, match="case DYN_0X3C: video .* does not exist"):
        echonet_dynamic.main(["-i", source, "-np", "2", "--overwrite"])
    assert os.listdir(raw) == ["Dataset631_EchoNetDynamic"]  # the previous conversion is kept


# ------------------------------------------------------------------------------------------------ bad input
def append_rows(path, rows):
    with open(path, "a", newline="") as f:
        csv.writer(f).writerows(rows)


def camus_nifti(tmp_path):
    return fake.make_camus_nifti(str(tmp_path / "download"))


def patient_folder(source, patient):
    return os.path.join(source, "database_nifti", patient)


def break_missing_es_label(tmp_path):
    source = camus_nifti(tmp_path)
    os.remove(os.path.join(patient_folder(source, "patient0002"), "patient0002_4CH_ES_gt.nii.gz"))
    return camus.convert_camus, source, r"case CAMUS_patient0002_A4C: .*patient0002_4CH_ES_gt.nii.gz is missing"


def break_missing_cfg(tmp_path):
    source = camus_nifti(tmp_path)
    os.remove(os.path.join(patient_folder(source, "patient0001"), "Info_2CH.cfg"))
    return camus.convert_camus, source, r"case CAMUS_patient0001_A2C: .*Info_2CH.cfg is missing"


def break_cfg_frame_beyond_sequence(tmp_path):
    source = fake.make_camus_mhd(str(tmp_path / "download"))
    fake.write_cfg(os.path.join(source, "training", "patient0002", "Info_4CH.cfg"), 1, 14, 14)
    return camus.convert_camus, source, r"case CAMUS_patient0002_A4C: .*ES 14 .* has 12 frames"


def break_camus_label_value(tmp_path):
    source = camus_nifti(tmp_path)
    write_image(os.path.join(patient_folder(source, "patient0001"), "patient0001_4CH_ED_gt.nii.gz"),
                np.full(fake.CAMUS_SHAPE, 5, np.uint8), fake.CAMUS_SPACING)
    return camus.convert_camus, source, r"case CAMUS_patient0001_A4C: .* label values \[5\]"


def break_camus_unlisted_patient(tmp_path):
    source = camus_nifti(tmp_path)
    shutil.copytree(patient_folder(source, "patient0001"), patient_folder(source, "patient0009"))
    return camus.convert_camus, source, r"case patient0009: .* not listed in database_split"


def break_camus_empty_source(tmp_path):
    os.makedirs(tmp_path / "download" / "CAMUS_public" / "database_nifti")
    return camus.convert_camus, str(tmp_path / "download"), r"no patient folders in .*database_nifti"


def break_dynamic_orphan_tracing(tmp_path):
    source = fake.make_dynamic(str(tmp_path / "download"))
    append_rows(os.path.join(source, "VolumeTracings.csv"), fake.chord_rows("0X9Z.avi", 1, 10))
    return echonet_dynamic.convert_echonet_dynamic, source, r"case DYN_0X9Z: .* traces 0X9Z.avi, a video .* not list"


def break_dynamic_frame_beyond_video(tmp_path):
    source = fake.make_dynamic(str(tmp_path / "download"))
    append_rows(os.path.join(source, "VolumeTracings.csv"), fake.chord_rows("0X3C.avi", 40, 25))
    return echonet_dynamic.convert_echonet_dynamic, source, r"case DYN_0X3C: tracing at frame 40 but .* 20 frames"


def break_dynamic_unreadable_video(tmp_path):
    source = fake.make_dynamic(str(tmp_path / "download"))
    with open(os.path.join(source, "Videos", "0X2B.avi"), "wb") as f:
        f.write(b"this is not a video" * 10)
    return echonet_dynamic.convert_echonet_dynamic, source, r"case DYN_0X2B: cannot read any frame from .*0X2B.avi"


def break_dynamic_missing_video(tmp_path):
    source = fake.make_dynamic(str(tmp_path / "download"))
    os.remove(os.path.join(source, "Videos", "0X1A.avi"))
    return echonet_dynamic.convert_echonet_dynamic, source, r"case DYN_0X1A: video .*0X1A.avi does not exist"


def break_dynamic_missing_tracings(tmp_path):
    source = fake.make_dynamic(str(tmp_path / "download"))
    os.remove(os.path.join(source, "VolumeTracings.csv"))
    return echonet_dynamic.convert_echonet_dynamic, source, r"VolumeTracings.csv does not exist"


def break_dynamic_unknown_split(tmp_path):
    source = fake.make_dynamic(str(tmp_path / "download"))
    append_rows(os.path.join(source, "FileList.csv"), [["0X6F", 60, 30, 80, 112, 112, 50, 20, "EXTERNAL"]])
    return echonet_dynamic.convert_echonet_dynamic, source, r"case DYN_0X6F: .*Split 'EXTERNAL'"


def break_pediatric_patient_in_two_folds(tmp_path):
    source = fake.make_pediatric(str(tmp_path / "download"), nested=False)
    append_rows(os.path.join(source, "PSAX", "FileList.csv"), [["CR32a-PSAX9-000009.avi", 60, "M", 5, 20, 110, 9]])
    return (echonet_pediatric.convert_echonet_pediatric, source,
            r"case PED_CR32a-PSAX9-000009_PSAX: patient CR32a is in fold 9 here and in fold 0")


def break_pediatric_bad_frame(tmp_path):
    source = fake.make_pediatric(str(tmp_path / "download"), nested=False)
    append_rows(os.path.join(source, "A4C", "VolumeTracings.csv"), [["CR32a-A4C1-000001.avi", 3, 4, "twelve"]])
    return (echonet_pediatric.convert_echonet_pediatric, source,
            r"case PED_CR32a-A4C1-000001_A4C: .*VolumeTracings.csv line \d+: Frame 'twelve'")


def break_pediatric_missing_column(tmp_path):
    source = fake.make_pediatric(str(tmp_path / "download"), nested=False)
    fake.write_csv(os.path.join(source, "PSAX", "FileList.csv"), ["FileName", "EF"], [["CR32a-PSAX1-000001.avi", 60]])
    return echonet_pediatric.convert_echonet_pediatric, source, r"PSAX/FileList.csv: header .* lacks .*'Split'"


@pytest.mark.parametrize("breaker", [
    break_missing_es_label, break_missing_cfg, break_cfg_frame_beyond_sequence, break_camus_label_value,
    break_camus_unlisted_patient, break_camus_empty_source, break_dynamic_orphan_tracing,
    break_dynamic_frame_beyond_video, break_dynamic_unreadable_video, break_dynamic_missing_video,
    break_dynamic_missing_tracings, break_dynamic_unknown_split, break_pediatric_patient_in_two_folds,
    break_pediatric_bad_frame, break_pediatric_missing_column], ids=lambda f: f.__name__[len("break_"):])
def test_bad_input_names_the_case_and_leaves_nothing(tmp_path, monkeypatch, breaker):
    convert, source, message = breaker(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match=message):
        convert(source)
    assert_nothing_written(raw)


def test_missing_source_folder(tmp_path, monkeypatch):
    raw = set_raw(monkeypatch, tmp_path)
    for convert in (camus.convert_camus, echonet_dynamic.convert_echonet_dynamic,
                    echonet_pediatric.convert_echonet_pediatric):
        with pytest.raises(ConversionError, match="nothing.* does not exist"):
            convert(str(tmp_path / "nothing"))
    assert_nothing_written(raw)
