"""VS converter on a fake vs_gk_<N> tree: T1ce only (T2 ignored), 0/255 masks binarised, oblique geometry kept."""
from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

from fake_sources import read_array, write_image
from nnunetv2_universal.dataset_conversion import vestibular_schwannoma as vs

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane, as oblique MR acquisitions are


def make_vs(root, ids=(1, 2, 10)):
    for n in ids:
        folder = os.path.join(root, f"vs_gk_{n}")
        write_image(os.path.join(folder, "vs_gk_t1_refT1.nii.gz"), np.full((6, 16, 16), 10.0 * n, np.float32),
                    (0.4, 0.4, 1.5), (5.0, -3.0, 2.0), DIRECTION)
        mask = np.zeros((6, 16, 16), np.uint8)
        mask[2:4, 5:8, 6:9] = 255
        write_image(os.path.join(folder, "vs_gk_seg_refT1.nii.gz"), mask, (0.4, 0.4, 1.5), (5.0, -3.0, 2.0),
                    DIRECTION)
        write_image(os.path.join(folder, "vs_gk_t2_refT2.nii.gz"), np.ones((4, 8, 8), np.float32))
    return root


def test_vs_conversion(tmp_path, monkeypatch):
    for k in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{k}", str(tmp_path / k))
    vs.main(["-i", make_vs(str(tmp_path / "src"))])
    out = tmp_path / "raw" / "Dataset613_VestibularSchwannoma"
    assert sorted(os.listdir(out / "imagesTr")) == ["vs_10_0000.nii.gz", "vs_1_0000.nii.gz", "vs_2_0000.nii.gz"]
    assert np.all(read_array(str(out / "imagesTr" / "vs_10_0000.nii.gz")) == 100)  # the T1, not the T2
    seg = read_array(str(out / "labelsTr" / "vs_2.nii.gz"))
    assert set(np.unique(seg)) == {0, 1} and seg[2, 6, 7] == 1 and seg.sum() == 2 * 3 * 3
    img = sitk.ReadImage(str(out / "labelsTr" / "vs_2.nii.gz"))
    assert np.allclose(img.GetDirection(), DIRECTION) and np.allclose(img.GetSpacing(), (0.4, 0.4, 1.5))
    dj = json.load(open(out / "dataset.json"))
    assert dj["channel_names"] == {"0": "T1ce"} and dj["labels"] == {"background": 0, "tumour": 1}
    assert "spacing" not in dj["universal_task"]
    split = json.load(open(out / "splits_final.json"))[0]
    assert sorted(split["train"] + split["val"]) == ["vs_1", "vs_10", "vs_2"] and not set(split["train"]) & set(
        split["val"])
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(out), 1)
