"""M4oE's converters on layout-true fake trees: FLARE22, AMOS22 (CT and MR by case number, validation labels,
the release's dataset.json with its 'licence' key) and ATLAS 2023 (and the stroke ATLAS refused)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fake_sources import blob_label, ct_volume, read_array, set_raw, write_image
from nnunetv2_universal.dataset_conversion import amos22, atlas23, flare22
from nnunetv2_universal.dataset_conversion.toolkit import ConversionError

SHAPE = (6, 16, 16)


def organs(n, count):
    return blob_label(SHAPE, values=tuple(range(1, count + 1)), seed=n)


def make_flare22(root):
    """FLARE22Train/images/FLARE22_Tr_0001_0000.nii.gz + labels/FLARE22_Tr_0001.nii.gz; returns the release."""
    root = Path(root) / "FLARE22Train"
    for n in (1, 2, 3, 10, 11):
        write_image(str(root / "images" / f"FLARE22_Tr_{n:04d}_0000.nii.gz"), ct_volume(SHAPE, n), (0.8, 0.8, 2.5),
                    (n, 0, 0))
        write_image(str(root / "labels" / f"FLARE22_Tr_{n:04d}.nii.gz"), organs(n, 13), (0.8, 0.8, 2.5), (n, 0, 0))
    (root / "images" / "._FLARE22_Tr_0001_0000.nii.gz").write_text("junk")
    return root


def make_atlas23(root):
    """atlas-train-dataset-1.0.1/train/imagesTr/im0.nii.gz + labelsTr/lb0.nii.gz; returns the release."""
    train = Path(root) / "atlas-train-dataset-1.0.1" / "train"
    for n in (0, 1, 2, 3, 12):
        write_image(str(train / "imagesTr" / f"im{n}.nii.gz"), np.abs(ct_volume(SHAPE, n)), (1.5, 1.5, 3.0))
        write_image(str(train / "labelsTr" / f"lb{n}.nii.gz"), organs(n, 2), (1.5, 1.5, 3.0))
    return train.parent


def test_flare22(tmp_path, monkeypatch, capsys):
    root = make_flare22(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    flare22.main(["-i", str(tmp_path)])
    assert "MSD Task07 Pancreas" in capsys.readouterr().out
    folder = os.path.join(raw, "Dataset640_FLARE22")
    expected = sorted(f"flare22_{n}.nii.gz" for n in (1, 2, 3, 10, 11))
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == expected
    np.testing.assert_array_equal(read_array(os.path.join(folder, "labelsTr", "flare22_10.nii.gz")), organs(10, 13))
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["labels"]["duodenum"] == 12 and dataset["universal_task"]["channels"] == {"0": "CT"}
    splits = json.load(open(os.path.join(folder, "splits_final.json")))
    assert sorted(splits[0]["train"] + splits[0]["val"], key=lambda c: int(c.split("_")[1])) == \
        [f"flare22_{n}" for n in (1, 2, 3, 10, 11)]
    # the MSD overlap filter drops the cases whose CT geometry is an MSD Pancreas CT's
    msd = tmp_path / "Task07_Pancreas"
    write_image(str(msd / "imagesTr" / "pancreas_001.nii.gz"), ct_volume(SHAPE, 2), (0.8, 0.8, 2.5), (2, 0, 0))
    flare22.main(["-i", str(root), "-d", "645", "--exclude_msd_pancreas", str(msd)])
    assert "flare22_2.nii.gz" not in os.listdir(os.path.join(raw, "Dataset645_FLARE22", "labelsTr"))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(folder, 1)


def make_amos(root, with_val_labels=True):
    base = root / "amos22"
    for sub, numbers in (("Tr", (1, 5, 9, 501, 540, 580)), ("Va", (8, 12, 507)), ("Ts", (2, 600))):
        for n in numbers:
            direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1) if n == 5 else None
            image = ct_volume(SHAPE, n) if n <= 500 else np.abs(ct_volume(SHAPE, n)).astype(np.int16)
            write_image(str(base / f"images{sub}" / f"amos_{n:04d}.nii.gz"), image, (0.7, 0.7, 5.0),
                        direction=direction)
            if sub != "Ts" and (sub == "Tr" or with_val_labels):
                write_image(str(base / f"labels{sub}" / f"amos_{n:04d}.nii.gz"), organs(n, 15 if n <= 500 else 13),
                            (0.7, 0.7, 5.0), direction=direction)
    (base / "dataset.json").write_text(json.dumps({"name": "AMOS", "licence": "CC-BY-SA 4.0", "training": [],
                                                   "validation": [], "test": []}))
    return base


def test_amos22_ct_and_mr(tmp_path, monkeypatch):
    source = make_amos(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    amos22.main(["-i", str(tmp_path)])
    ct, mr = os.path.join(raw, "Dataset641_AMOS22CT"), os.path.join(raw, "Dataset642_AMOS22MR")
    assert json.load(open(os.path.join(ct, "splits_final.json"))) == [{"train": ["amos_1", "amos_5", "amos_9"],
                                                                       "val": ["amos_8", "amos_12"]}]
    assert json.load(open(os.path.join(mr, "splits_final.json"))) == [{"train": ["amos_501", "amos_540", "amos_580"],
                                                                       "val": ["amos_507"]}]
    assert os.listdir(os.path.join(ct, "imagesTs")) == ["amos_2_0000.nii.gz"]
    assert json.load(open(os.path.join(mr, "dataset.json")))["channel_names"] == {"0": "MRI"}
    assert json.load(open(os.path.join(ct, "dataset.json")))["labels"]["prostate_uterus"] == 15
    np.testing.assert_array_equal(read_array(os.path.join(ct, "labelsTr", "amos_5.nii.gz")), organs(5, 15))
    # CT and MR label the same organs: one structure each (Hermes shares their task tokens), reference weights
    from nnunetv2_universal.registry import TaskRegistry, TaskSpec
    specs = [TaskSpec.from_dataset_json(json.load(open(os.path.join(d, "dataset.json"))), os.path.basename(d))
             for d in (ct, mr)]
    assert TaskRegistry(specs).structure_ids() == [list(range(15)), list(range(15))]
    assert [s.sampling_weight for s in specs] == [1.8, 1.6]
    # without validation labels: seeded split of imagesTr; --modality mr writes one dataset
    other = tmp_path / "b"
    make_amos(other, with_val_labels=False)
    amos22.main(["-i", str(other / "amos22"), "-d", "646", "-d_mr", "647", "--modality", "mr"])
    assert os.path.isdir(os.path.join(raw, "Dataset647_AMOS22MR")) and not os.path.isdir(
        os.path.join(raw, "Dataset646_AMOS22CT"))
    assert source


def test_atlas23_and_the_stroke_dataset(tmp_path, monkeypatch):
    make_atlas23(tmp_path)
    raw = set_raw(monkeypatch, tmp_path)
    atlas23.main(["-i", str(tmp_path)])
    folder = os.path.join(raw, "Dataset643_ATLAS23")
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["labels"] == {"background": 0, "liver": 1, "tumour": 2} and dataset["numTraining"] == 5
    assert dataset["channel_names"] == {"0": "CE-MRI"}  # M4oE's contrast-enhanced MRI expert
    assert "atlas23_12.nii.gz" in os.listdir(os.path.join(folder, "labelsTr"))
    stroke = tmp_path / "ATLAS_2" / "Training" / "R001" / "sub-r001s001" / "ses-1" / "anat"
    write_image(str(stroke / "sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"), ct_volume(SHAPE, 1))
    with pytest.raises(ConversionError, match="stroke"):
        atlas23.convert_atlas23(str(tmp_path / "ATLAS_2"))


def test_m4oe_converters_refuse_bad_input(tmp_path, monkeypatch):
    raw = set_raw(monkeypatch, tmp_path)
    root = tmp_path / "FLARE22Train"
    write_image(str(root / "images" / "FLARE22_Tr_0001_0000.nii.gz"), ct_volume(SHAPE, 1))
    write_image(str(root / "labels" / "FLARE22_Tr_0002.nii.gz"), organs(2, 13))
    with pytest.raises(ConversionError, match="flare22_1"):
        flare22.convert_flare22(str(root))
    base = make_amos(tmp_path / "a")
    write_image(str(base / "labelsTr" / "amos_0009.nii.gz"), organs(9, 15)[:, :8], (0.7, 0.7, 5.0))
    with pytest.raises(ConversionError, match="amos_9"):
        amos22.convert_amos22(str(base))
    train = tmp_path / "at" / "train"
    write_image(str(train / "imagesTr" / "im0.nii.gz"), ct_volume(SHAPE, 0))
    write_image(str(train / "labelsTr" / "lb0.nii.gz"), np.full(SHAPE, 7, np.uint8))
    with pytest.raises(ConversionError, match="atlas23_0"):
        atlas23.convert_atlas23(str(tmp_path / "at"))
    assert not os.path.isdir(raw) or not [d for d in os.listdir(raw) if not d.startswith(".")]
