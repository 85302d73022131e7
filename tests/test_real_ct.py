"""The real-CT benchmark's converters on fake TotalSegmentator sources that mirror the real ones:
`nnUNetv2_universal_convert_totalseg_examples` on the tests/reference_files folder (file names, orientations: NIfTI
x/y flipped, the DICOM series identity, its segmentation y flipped; TotalSegmentator's class ids spleen 1, kidneys
2/3, liver 5, stomach 6), `nnUNetv2_universal_convert_totalseg_dataset` on the dataset (meta.csv with its BOM and
columns, sXXXX/ct.nii.gz, one binary mask per structure in segmentations/, RAS at 1.5 mm as nibabel writes it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from fake_sources import set_raw
from nnunetv2_universal.dataset_conversion import totalseg_dataset, totalseg_examples
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError
from nnunetv2_universal.dataset_conversion.totalseg_examples import SOURCE_FILES, STRUCTURES
from nnunetv2_universal.demo.real_ct import REAL_TASKS, patient_of

RAS = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
LAS = (1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)


def _patient(shape, rng):
    """CT (HU) and TotalSegmentator labels (z, y, x): liver at low x (patient's right in LPS), spleen at high x."""
    z, y, x = shape
    ct = rng.normal(-1000, 10, shape)
    ct[:, y // 5:4 * y // 5, x // 8:7 * x // 8] = rng.normal(30, 10, (z, 4 * y // 5 - y // 5, 7 * x // 8 - x // 8))
    seg = np.zeros(shape, np.uint8)
    seg[:, y // 4:y // 2, x // 6:x // 2] = 5  # liver
    seg[:, y // 3:y // 2, 5 * x // 8:3 * x // 4] = 1  # spleen
    seg[:, 2 * y // 3:3 * y // 4, x // 4:x // 3] = 2  # a kidney: neither task's structure
    seg[:, y // 5:y // 4, x // 2:5 * x // 8] = 6  # stomach
    return ct, seg


def _write(array, path, spacing, origin, direction, pixel=None):
    image = sitk.GetImageFromArray(array if pixel is None else array.astype(pixel))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, path, True)
    return image


def _dicom_series(array, folder, spacing, origin):
    """One CT slice file per z, identity direction, named like TotalSegmentator's (CT.<uid>, no extension)."""
    os.makedirs(folder)
    series = "1.2.826.0.1.3680043.2.1125.999.1"
    for k, plane in enumerate(array):
        image = sitk.GetImageFromArray(plane[None].astype(np.int16))
        image.SetSpacing(spacing)
        image.SetOrigin((origin[0], origin[1], origin[2] + k * spacing[2]))
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series), ("0020|000d", series + ".0"),
                           ("0020|0013", str(k + 1)), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", "\\".join(str(v) for v in (origin[0], origin[1], origin[2] + k * spacing[2]))),
                           ("0028|0030", f"{spacing[1]}\\{spacing[0]}"), ("0018|0050", str(spacing[2])),
                           ("0028|1052", "0"), ("0028|1053", "1")):
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(os.path.join(folder, f"CT.{series}.{k + 1}"))
        writer.Execute(image)


def make_totalseg_examples(root) -> tuple:
    """A fake TotalSegmentator tests/reference_files folder under root; returns (folder, seg A, seg B)."""
    rng = np.random.default_rng(0)
    folder = Path(root) / "TotalSegmentator" / "tests" / "reference_files"
    folder.mkdir(parents=True)
    ct_a, seg_a = _patient((8, 24, 28), rng)
    # stored RAS: array x and y run towards the patient's right and anterior
    _write(ct_a[:, ::-1, ::-1], str(folder / SOURCE_FILES["ct"]), (3.0, 3.0, 3.0), (178.0, -11.3, 94.3), RAS,
           np.int16)
    _write(seg_a[:, ::-1, ::-1], str(folder / SOURCE_FILES["seg"]), (3.0, 3.0, 3.0), (178.0, -11.3, 94.3), RAS)
    ct_b, seg_b = _patient((5, 40, 48), rng)
    spacing_b, origin_b = (2.0, 2.0, 2.5), (-50.0, -40.0, -800.0)
    _dicom_series(ct_b, str(folder / SOURCE_FILES["dicom"]), spacing_b, origin_b)
    # its segmentation stored with y flipped (as dicom2nifti writes it): same world, other voxel order
    _write(seg_b[:, ::-1, :], str(folder / SOURCE_FILES["dicom_seg"]), spacing_b,
           (origin_b[0], origin_b[1] + 39 * spacing_b[1], origin_b[2]), LAS)
    return str(folder), seg_a, seg_b


@pytest.fixture
def source(tmp_path):
    return make_totalseg_examples(tmp_path)


def test_two_partially_labelled_tasks_from_one_patient_and_a_second_patient_from_dicom(source, tmp_path, monkeypatch):
    folder, seg_a, seg_b = source
    raw = tmp_path / "raw"
    set_raw(monkeypatch, tmp_path)
    totalseg_examples.main(["-i", folder, "--num_train", "3"])
    names = ["Dataset511_RealLiverCT", "Dataset512_RealSpleenCT"]
    assert sorted(os.listdir(raw)) == names
    for name, task in zip(names, REAL_TASKS):
        root = raw / name
        assert sorted(os.listdir(root / "imagesTr")) == [f"{task.name.lower()}_{i:03d}_0000.nii.gz" for i in range(3)]
        assert sorted(os.listdir(root / "imagesTs")) == [f"{task.name.lower()}_{c}_000_0000.nii.gz" for c in "ab"]
        for f in os.listdir(root / "imagesTr"):
            image = sitk.ReadImage(str(root / "imagesTr" / f))
            assert np.allclose(image.GetDirection(), RAS)  # the training patient as stored
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / f.replace("_0000", ""))))
            assert set(np.unique(label)) == {0, 1}  # the task's one structure, the other organ is background
        b = sitk.ReadImage(str(root / "imagesTs" / f"{task.name.lower()}_b_000_0000.nii.gz"))
        assert np.allclose(b.GetDirection(), np.eye(3).ravel()) and b.GetSize() == (48, 40, 5)  # read from DICOM
        structures = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "structuresTs" /
                                                               f"{task.name.lower()}_b_000.nii.gz")))
        # the y-flipped segmentation lands on the series' own grid: liver and spleen where they are in the CT
        np.testing.assert_array_equal(structures == STRUCTURES["liver"], seg_b == 5)
        np.testing.assert_array_equal(structures == STRUCTURES["spleen"], seg_b == 1)
        labels_b = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTs" / f"{task.name.lower()}_b_000.nii.gz")))
        own = STRUCTURES[next(iter(task.labelled.values()))]
        np.testing.assert_array_equal(labels_b, (structures == own).astype(np.uint8))
        entry = json.load(open(root / "dataset.json"))["universal_task"]
        assert entry["name"] == task.name and entry["labels"] == task.labels and entry["spacing"] == [3.0, 6.0, 6.0]
    assert patient_of("realliverct_b_000") == "b" and patient_of("realliverct_a_000") == "a"
    # the two tasks got different crops of patient A
    sizes = {sitk.ReadImage(str(raw / n / "imagesTr" / f"{t.name.lower()}_000_0000.nii.gz")).GetSize()
             for n, t in zip(names, REAL_TASKS)}
    assert len(sizes) == 2


def test_a_missing_source_file_is_named_and_nothing_is_written(source, tmp_path, monkeypatch):
    folder = source[0]
    os.remove(os.path.join(folder, SOURCE_FILES["dicom_seg"]))
    raw = tmp_path / "raw"
    raw.mkdir()
    set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match="lacks example_seg_dicom.nii.gz"):
        totalseg_examples.convert_totalseg_examples(folder)
    assert os.listdir(raw) == []


META_COLUMNS = ("image_id;age;gender;institute;study_type;split;manufacturer;scanner_model;kvp;pathology;"
                "pathology_location")
# subject -> (split, shows the liver, shows the spleen): s0003 is a head scan, s0009 a thorax without the spleen
SUBJECTS = {"s0000": ("train", True, True), "s0001": ("train", True, True), "s0002": ("train", True, True),
            "s0003": ("train", False, False), "s0004": ("train", True, True), "s0005": ("val", True, True),
            "s0006": ("val", True, True), "s0007": ("test", True, True), "s0009": ("test", True, False)}


def make_totalseg_dataset(root) -> str:
    """A fake unzipped TotalSegmentator dataset under root; returns its folder."""
    rng = np.random.default_rng(1)
    folder = Path(root) / "Totalsegmentator_dataset_v201"
    folder.mkdir(parents=True)
    rows = [META_COLUMNS] + [f"{s};61;m;A;ct abdomen-pelvis;{split};Siemens;SOMATOM;120;no pathology;"
                             for s, (split, _, _) in SUBJECTS.items()]
    (folder / "meta.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    affine = np.diag([-1.5, -1.5, 1.5, 1.0])  # nibabel's RAS+ voxel axes, 1.5 mm
    for subject, (_, liver, spleen) in SUBJECTS.items():
        ct, seg = _patient((6, 20, 24), rng)
        (folder / subject / "segmentations").mkdir(parents=True)
        nib.save(nib.Nifti1Image(ct.astype(np.int16).T, affine), str(folder / subject / "ct.nii.gz"))
        for name, value, shown in (("liver", 5, liver), ("spleen", 1, spleen), ("kidney_left", 2, True)):
            mask = (seg == value) & shown
            nib.save(nib.Nifti1Image(mask.astype(np.uint8).T, affine),
                     str(folder / subject / "segmentations" / f"{name}.nii.gz"))
    return str(folder)


def test_the_dataset_gives_each_task_other_patients_and_holds_out_val_and_test_subjects(tmp_path, monkeypatch):
    source = make_totalseg_dataset(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    totalseg_dataset.main(["-i", source, "--num_train", "2", "--num_test", "1"])
    names = ["Dataset511_RealLiverCT", "Dataset512_RealSpleenCT"]
    assert sorted(os.listdir(raw)) == names
    trained = {}
    for name, task in zip(names, REAL_TASKS):
        root = Path(raw) / name
        prefix = task.name.lower()
        trained[task.name] = {f[len(prefix) + 1:-len("_0000.nii.gz")] for f in os.listdir(root / "imagesTr")}
        own = STRUCTURES[next(iter(task.labelled.values()))]
        for subject in trained[task.name]:
            label = nib.load(str(root / "labelsTr" / f"{prefix}_{subject}.nii.gz"))
            expected = nib.load(os.path.join(source, subject, "segmentations",
                                             f"{next(iter(task.labelled.values()))}.nii.gz"))
            np.testing.assert_array_equal(np.asarray(label.dataobj), np.asarray(expected.dataobj))  # the one organ
            assert np.allclose(label.affine, expected.affine)
        held_out = sorted(os.listdir(root / "structuresTs"))
        assert [c[len(prefix) + 1:-len(".nii.gz")] for c in held_out] in (["a_s0005", "b_s0007"],
                                                                          ["a_s0006", "b_s0007"])
        structures = np.asarray(nib.load(str(root / "structuresTs" / held_out[1])).dataobj)
        assert set(np.unique(structures)) == {0, STRUCTURES["liver"], STRUCTURES["spleen"]}
        labels = np.asarray(nib.load(str(root / "labelsTs" / held_out[1])).dataobj)
        np.testing.assert_array_equal(labels, (structures == own).astype(np.uint8))
        dataset_json = json.load(open(root / "dataset.json"))
        assert dataset_json["universal_task"]["spacing"] == [3.0, 6.0, 6.0]
        assert "(TotalSegmentator dataset)" in dataset_json["description"] and dataset_json["numTraining"] == 2
    # two train subjects per task, different patients for the two tasks, never the head scan
    assert len(trained["RealLiverCT"]) == len(trained["RealSpleenCT"]) == 2
    assert not trained["RealLiverCT"] & trained["RealSpleenCT"] and "s0003" not in set.union(*trained.values())
    assert patient_of("realspleenct_b_s0007") == "b" and patient_of("realspleenct_a_s0005") == "a"


def test_too_few_subjects_showing_both_organs_are_named_and_nothing_is_written(tmp_path, monkeypatch):
    source = make_totalseg_dataset(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    with pytest.raises(ConversionError, match=r"meta.csv split 'test': only 1 of 2 subjects show both liver and "
                                              r"spleen, 2 needed"):
        totalseg_dataset.convert_totalseg_dataset(source, num_train=2, num_test=2)
    with pytest.raises(ConversionError, match=r"has no meta.csv: pass the unzipped TotalSegmentator dataset"):
        totalseg_dataset.convert_totalseg_dataset(str(tmp_path))
    assert not os.path.isdir(raw) or os.listdir(raw) == []
