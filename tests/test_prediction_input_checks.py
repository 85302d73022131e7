"""The prediction command's checks on an input folder, and its choice of worker processes (in-process, no model)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_universal.inference.input_checks import PredictionInputError, check_input_folder
from nnunetv2_universal.inference.predict_cli import _parser, prediction_workers
from nnunetv2_universal.registry import TaskSpec

CT = TaskSpec("liver", "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1})


def _volume(path, frames: int = 1) -> None:
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    sitk.WriteImage(sitk.JoinSeries([image] * frames) if frames > 1 else image, str(path))


def test_a_folder_of_images_with_another_ending_names_them_and_the_models_ending(tmp_path):
    _volume(tmp_path / "ct_0000.nii")
    with pytest.raises(PredictionInputError, match=r"it holds ct_0000\.nii, but this model reads \.nii\.gz files"):
        check_input_folder(str(tmp_path), ".nii.gz", CT)


def test_images_with_another_ending_beside_cases_are_named_and_left_out(tmp_path, capsys):
    _volume(tmp_path / "a_0000.nii.gz")
    _volume(tmp_path / "b_0000.nrrd")
    (tmp_path / "notes.txt").write_text("not an image")
    cases = check_input_folder(str(tmp_path), ".nii.gz", CT)
    assert [[f.split("/")[-1] for f in c] for c in cases] == [["a_0000.nii.gz"]]
    err = capsys.readouterr().err
    assert "1 file(s)" in err and "b_0000.nrrd" in err and "notes.txt" not in err


@pytest.mark.parametrize("spec", [CT, None], ids=["task", "all_tasks"])
def test_a_4d_file_stops_before_the_model_with_its_volume_count(tmp_path, spec):
    _volume(tmp_path / "a_0000.nii.gz")
    _volume(tmp_path / "series_0000.nii.gz", frames=2)
    with pytest.raises(PredictionInputError, match=r"case series: .*series_0000\.nii\.gz holds 2 volumes \(4D"):
        check_input_folder(str(tmp_path), ".nii.gz", spec)


@pytest.mark.parametrize("npp, nps, device, cases, expected", [
    (None, None, "cpu", 5, (0, 0)),  # a CPU: in this process
    (None, None, "cuda", 1, (0, 0)),  # one case: nothing to overlap
    (None, None, "cuda", 5, (3, 3)),  # nnU-Net's default
    (2, None, "cpu", 5, (2, 3)),  # given: as given
    (0, 0, "cuda", 5, (0, 0)),
])
def test_prediction_workers_only_where_they_can_overlap_work(npp, nps, device, cases, expected):
    assert prediction_workers(npp, nps, device, cases) == expected


def test_worker_process_defaults_come_from_nnunets_variables(monkeypatch):
    monkeypatch.delenv("nnUNet_npp", raising=False)
    monkeypatch.setenv("nnUNet_nps", "2")
    args = _parser().parse_args(["-d", "1", "--task", "T"])
    assert (args.npp, args.nps) == (None, 2)
