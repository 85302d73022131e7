"""Hermes' own datasets on layout-true fake trees: StructSeg 2019 (three tasks), CHAOS MR (DICOM series + PNG
labels, sequences of one subject in one fold), M&Ms-1 (4D cines, ED/ES from the CSV, non-orthonormal files
skipped) and the brain-structure set (argmax of probabilistic masks)."""
from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from fake_sources import blob_label, ct_volume, read_array, set_raw, write_image
from nnunetv2_universal.dataset_conversion import brain_structure, chaos, mnms, structseg
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

SHAPE = (5, 12, 12)


def make_structseg(root):
    """HaN_OAR|Naso_GTV|Thoracic_OAR/<i>/data.nii.gz + label.nii.gz; returns the folder holding the three."""
    for folder, count in (("HaN_OAR", 22), ("Naso_GTV", 1), ("Thoracic_OAR", 6)):
        for i in (1, 2, 3, 10):
            label = np.zeros(SHAPE, np.uint8)
            for v in range(1, count + 1):
                label.flat[v * 7] = v
            write_image(os.path.join(root, folder, str(i), "data.nii.gz"), ct_volume(SHAPE, i), (1, 1, 3))
            write_image(os.path.join(root, folder, str(i), "label.nii.gz"), label, (1, 1, 3))
    return root


def make_brain_structure(root):
    """train|valid|test/image/<name>_img.nii + mask/<name>_probmask_<tissue>.nii; returns root."""
    for part, names in (("train", ("dlbs_001", "dlbs_002")), ("valid", ("sald_003",)), ("test", ("ixi_004",))):
        for name in names:
            rng = np.random.default_rng(len(name))
            gm, wm, csf = (rng.uniform(0, 1, SHAPE).astype(np.float32) for _ in range(3))
            gm[0], wm[0], csf[0] = 0, 0, 0  # background slice
            base = os.path.join(root, part)
            write_image(os.path.join(base, "image", f"{name}_img.nii"), np.abs(ct_volume(SHAPE, 1)).astype(np.float32),
                        compress=False)
            for tissue, prob in (("graymatter", gm), ("whitematter", wm), ("csf", csf)):
                write_image(os.path.join(base, "mask", f"{name}_probmask_{tissue}.nii"), prob, compress=False)
    return root


def test_structseg_three_tasks(tmp_path, monkeypatch):
    make_structseg(str(tmp_path / "src"))
    raw = set_raw(monkeypatch, tmp_path)
    structseg.main(["-i", str(tmp_path / "src")])
    assert sorted(os.listdir(raw)) == ["Dataset650_StructSegHaNOAR", "Dataset651_StructSegNasoGTV",
                                       "Dataset652_StructSegThoracicOAR"]
    han = json.load(open(os.path.join(raw, "Dataset650_StructSegHaNOAR", "dataset.json")))
    assert han["labels"]["mandible_right"] == 22 and han["universal_task"]["name"] == "StructSegHaNOAR"
    split_han = json.load(open(os.path.join(raw, "Dataset650_StructSegHaNOAR", "splits_final.json")))
    split_naso = json.load(open(os.path.join(raw, "Dataset651_StructSegNasoGTV", "splits_final.json")))
    assert [c.split("_")[-1] for c in split_han[0]["val"]] == [c.split("_")[-1] for c in split_naso[0]["val"]]
    label = read_array(os.path.join(raw, "Dataset652_StructSegThoracicOAR", "labelsTr", "structseg_thorax_10.nii.gz"))
    assert sorted(np.unique(label).tolist()) == list(range(7))


def write_dicom_series(folder, volume, reverse_instances=False, spacing=(0.8, 0.8, 4.0)):
    """One 2D DICOM file per slice (z = slice), instance numbers following z or reversed; file names do not sort
    by position."""
    os.makedirs(folder, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    n = volume.shape[0]
    for z in range(n):
        image = sitk.GetImageFromArray(volume[z].astype(np.int16))
        image.SetSpacing(spacing[:2])
        instance = n - z if reverse_instances else z + 1
        for tag, value in (("0008|0060", "MR"), ("0020|000d", "1.2.3.4"), ("0020|000e", "1.2.3.4.5"),
                           ("0020|0013", str(instance)), ("0020|0032", f"0\\0\\{z * spacing[2]}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
                           ("0018|0050", str(spacing[2])), ("0008|0018", f"1.2.3.4.5.{z + 1}")):
            image.SetMetaData(tag, value)
        writer.SetFileName(os.path.join(folder, f"IMG-{(z * 7) % n:04d}-{z}.dcm"))
        writer.Execute(image)


def chaos_label(shape, seed):
    label = blob_label(shape, values=(1, 2, 3, 4), seed=seed)
    return np.vectorize({0: 0, 1: 63, 2: 126, 3: 189, 4: 252}.get)(label).astype(np.uint8), label


def make_chaos(root, patients=("1", "2", "3"), reverse_patient="2"):
    for p in patients:
        base = os.path.join(root, "CHAOS_Train_Sets", "Train_Sets", "MR", p)
        pngs, truth = chaos_label(SHAPE, int(p))
        for series in (("T1DUAL", "DICOM_anon", "InPhase"), ("T1DUAL", "DICOM_anon", "OutPhase"),
                       ("T2SPIR", "DICOM_anon")):
            write_dicom_series(os.path.join(base, *series), np.abs(ct_volume(SHAPE, int(p))),
                               reverse_instances=p == reverse_patient)
        for seq in ("T1DUAL", "T2SPIR"):
            ground = os.path.join(base, seq, "Ground")
            os.makedirs(ground, exist_ok=True)
            # PNG k belongs to instance k+1; with reversed instances that is slice n-1-k
            order = range(SHAPE[0] - 1, -1, -1) if p == reverse_patient else range(SHAPE[0])
            for k, z in enumerate(order):
                sitk.WriteImage(sitk.GetImageFromArray(pngs[z]), os.path.join(ground, f"liver_GT_{k:03d}.png"))
    return os.path.join(root, "CHAOS_Train_Sets"), truth


def test_chaos_dicom_and_png(tmp_path, monkeypatch):
    source, _ = make_chaos(str(tmp_path / "src"))
    raw = set_raw(monkeypatch, tmp_path)
    chaos.main(["-i", source])
    t1, t2 = os.path.join(raw, "Dataset653_CHAOST1"), os.path.join(raw, "Dataset654_CHAOST2")
    assert sorted(os.listdir(os.path.join(t1, "labelsTr")))[:2] == ["chaos_1_t1_in.nii.gz", "chaos_1_t1_out.nii.gz"]
    assert json.load(open(os.path.join(t2, "dataset.json")))["channel_names"] == {"0": "T2"}
    for p in ("1", "2"):  # reversed instance numbering still puts every label on its slice
        label = read_array(os.path.join(t1, "labelsTr", f"chaos_{p}_t1_in.nii.gz"))
        image = sitk.ReadImage(os.path.join(t1, "imagesTr", f"chaos_{p}_t1_in_0000.nii.gz"))
        expected = blob_label(SHAPE, values=(1, 2, 3, 4), seed=int(p))
        if sitk.ReadImage(os.path.join(t1, "imagesTr", f"chaos_{p}_t1_in_0000.nii.gz")).GetDirection()[8] < 0:
            expected = expected[::-1]
        np.testing.assert_array_equal(label, expected)
        assert image.GetSize() == (12, 12, 5)
    folds = json.load(open(os.path.join(t1, "splits_final.json")))
    for fold in folds:  # in-phase and opposed-phase of a subject in the same fold
        assert {c.split("_")[1] for c in fold["val"]}.isdisjoint({c.split("_")[1] for c in fold["train"]})
    from nnunetv2_universal.registry import TaskRegistry, TaskSpec
    specs = [TaskSpec.from_dataset_json(json.load(open(os.path.join(d, "dataset.json"))), os.path.basename(d))
             for d in (t1, t2)]
    assert TaskRegistry(specs).structure_ids() == [[0, 1, 2, 3], [0, 1, 2, 3]]  # T1 and T2 share structures
    t2_folds = json.load(open(os.path.join(t2, "splits_final.json")))
    assert t2_folds == [{k: [c.replace("t1_in", "t2") for c in v if "t1_in" in c] for k, v in f.items()}
                        for f in folds]  # the same subjects per fold in both datasets


def test_chaos_png_count_mismatch(tmp_path, monkeypatch):
    source, _ = make_chaos(str(tmp_path / "src"), patients=("1",))
    os.remove(os.path.join(source, "Train_Sets", "MR", "1", "T2SPIR", "Ground", "liver_GT_000.png"))
    raw = set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match="case chaos_1_t2: 4 label PNGs"):
        chaos.convert_chaos(source)
    assert os.listdir(raw) == []  # T1 and T2 are written together or not at all


def write_cine(path, frames=6, shear=False):
    data = np.random.default_rng(0).normal(100, 20, (12, 12, 4, frames)).astype(np.float32)
    affine = np.diag([1.2, 1.2, 8.0, 1.0])
    if shear:
        affine[0, 1] = 0.9
    image = nib.Nifti1Image(data, affine)
    if shear:
        image.set_qform(None, code=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(image, path)


def write_cine_gt(path, ed, es, frames=6, empty_es=False):
    gt = np.zeros((12, 12, 4, frames), np.uint8)
    gt[3:7, 3:7, 1, ed] = 1
    gt[2:8, 2:3, 1, ed] = 2
    gt[8:10, 3:7, 2, ed] = 3
    if not empty_es:
        gt[4:6, 4:6, 1, es] = 1
    nib.save(nib.Nifti1Image(gt, np.diag([1.2, 1.2, 8.0, 1.0])), path)


def make_mnms(root, empty_es=False):
    base = os.path.join(root, "OpenDataset")
    rows = []
    for part, codes in (("Training/Labeled", ("A1B2C3", "D4E5F6", "G7H8I9")), ("Validation", ("J1K2L3",)),
                        ("Testing", ("M4N5O6",))):
        for i, code in enumerate(codes):
            folder = os.path.join(base, part, code)
            shear = code == "M4N5O6"
            write_cine(os.path.join(folder, f"{code}_sa.nii.gz"), shear=shear)
            write_cine_gt(os.path.join(folder, f"{code}_sa_gt.nii.gz"), 0, 3 + i % 2, empty_es=empty_es and i == 1)
            rows.append([code, "A", 1, 0, 3 + i % 2])
    with open(os.path.join(base, "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["External code", "VendorName", "Vendor", "Centre", "ED", "ES"][:1] + ["Vendor", "Centre", "ED",
                                                                                          "ES"])
        w.writerows(rows)
    return base


def test_mnms_ed_es_frames(tmp_path, monkeypatch, capsys):
    source = make_mnms(str(tmp_path / "src"))
    raw = set_raw(monkeypatch, tmp_path)
    mnms.main(["-i", str(tmp_path / "src")])
    folder = os.path.join(raw, "Dataset655_MnMs")
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == sorted(
        f"mnms_{c}_{p}.nii.gz" for c in ("A1B2C3", "D4E5F6", "G7H8I9") for p in ("ed", "es"))
    label = read_array(os.path.join(folder, "labelsTr", "mnms_D4E5F6_ed.nii.gz"))
    assert label.shape == (4, 12, 12) and sorted(np.unique(label).tolist()) == [0, 1, 2, 3]
    assert (read_array(os.path.join(folder, "labelsTr", "mnms_D4E5F6_es.nii.gz")) == 1).sum() == 4
    # the Testing cine with non-orthonormal direction cosines is skipped and named
    assert sorted(os.listdir(os.path.join(folder, "labelsTs"))) == ["mnms_J1K2L3_ed.nii.gz", "mnms_J1K2L3_es.nii.gz"]
    assert "non-orthonormal direction cosines skipped: ['mnms_M4N5O6']" in capsys.readouterr().out
    for fold in json.load(open(os.path.join(folder, "splits_final.json"))):
        for case in fold["val"]:  # ED and ES of a patient together
            partner = case[:-2] + ("es" if case.endswith("ed") else "ed")
            assert partner in fold["val"]
    assert source


def test_mnms_empty_es_label_is_an_error(tmp_path, monkeypatch):
    make_mnms(str(tmp_path / "src"), empty_es=True)
    raw = set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match="case mnms_D4E5F6_es"):
        mnms.convert_mnms(str(tmp_path / "src"))
    assert not [d for d in os.listdir(raw) if not d.startswith(".")]


def test_brain_structure_argmax(tmp_path, monkeypatch):
    make_brain_structure(str(tmp_path / "src"))
    raw = set_raw(monkeypatch, tmp_path)
    brain_structure.main(["-i", str(tmp_path / "src")])
    folder = os.path.join(raw, "Dataset656_BrainStructure")
    label = read_array(os.path.join(folder, "labelsTr", "brain_dlbs_001.nii.gz"))
    rng = np.random.default_rng(len("dlbs_001"))
    gm, wm, csf = (rng.uniform(0, 1, SHAPE).astype(np.float32) for _ in range(3))
    np.testing.assert_array_equal(label[1:], np.argmax(np.stack([gm, wm, csf]), 0)[1:] + 1)
    assert (label[0] == 0).all()
    assert json.load(open(os.path.join(folder, "splits_final.json"))) == [{"train": ["brain_dlbs_001",
                                                                                     "brain_dlbs_002"],
                                                                           "val": ["brain_sald_003"]}]
    assert os.listdir(os.path.join(folder, "labelsTs")) == ["brain_ixi_004.nii.gz"]
