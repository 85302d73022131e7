"""The prediction command's checks on an input folder, and its choice of worker processes (in-process, no model)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_universal.inference.input_checks import PredictionInputError, check_input_folder, hu_channels
from nnunetv2_universal.inference.predict_cli import _parser, prediction_workers
from nnunetv2_universal.registry import TaskSpec

CT = TaskSpec("liver", "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1})
PET_CT = TaskSpec("lesion", "Dataset002_PETCT", {"0": "CT", "1": "PET"}, {"background": 0, "lesion": 1})


def _volume(path, frames: int = 1, spacing=(1.0, 1.0, 1.0), direction=None) -> None:
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(sitk.JoinSeries([image] * frames) if frames > 1 else image, str(path))


def test_a_folder_of_images_with_another_ending_names_them_and_the_models_ending(tmp_path):
    _volume(tmp_path / "ct_0000.nii")
    with pytest.raises(PredictionInputError, match=r"it holds ct_0000\.nii, but this model reads \.nii\.gz files"):
        check_input_folder(str(tmp_path), ".nii.gz", CT)


def test_a_folder_holding_a_dicom_series_says_so(tmp_path):
    """A DICOM series (files named by their UIDs, no ending: TotalSegmentator's example_ct_dicom) is not an input
    nnU-Net reads; the command names it instead of only finding no cases."""
    for uid in ("1.3.12.2.16573", "1.3.12.2.16574"):
        (tmp_path / f"CT.{uid}").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "README").write_text("not DICOM, and longer than one hundred and thirty-two bytes " * 4)
    with pytest.raises(PredictionInputError, match=r"no input cases .*; it holds 2 DICOM file\(s\) \(CT\.1\.3\.12\.2"
                                                   r"\.16573 \.\.\.\): write each series as one volume first"):
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


def test_an_rgb_image_is_refused_not_read_as_channels(tmp_path):
    """nnU-Net's reader would take the colour axis for channels, in the wrong place (TotalSegmentator's spine report
    image is such a file)."""
    rgb = sitk.GetImageFromArray(np.zeros((1, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "report_0000.nii.gz"))
    with pytest.raises(PredictionInputError, match=r"case report: .*report_0000\.nii\.gz has 3 values per voxel "
                                                   r"\(an RGB or vector image\)"):
        check_input_folder(str(tmp_path), ".nii.gz", CT)


@pytest.mark.parametrize("spacing, direction, what", [
    ((1.0, 1.0, 2.0), None, r"spacing \(1\.0, 1\.0, 2\.0\), .*pet_0000\.nii\.gz \(1\.0, 1\.0, 1\.0\)"),
    ((1.0, 1.0, 1.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1), r"direction \(-1\.0, 0\.0, .*\), .*pet_0000\.nii\.gz "
                                                     r"\(1\.0, 0\.0, .*\)"),
], ids=["spacing", "direction"])
def test_channels_of_a_case_on_different_grids_are_refused(tmp_path, spacing, direction, what):
    """nnU-Net stacks a case's channels voxel by voxel; it refuses another size, but only warns about another
    direction, and a flipped PET would be read onto the CT mirrored."""
    _volume(tmp_path / "pet_0000.nii.gz")
    _volume(tmp_path / "pet_0001.nii.gz", spacing=spacing, direction=direction)
    with pytest.raises(PredictionInputError, match=r"case pet: .*pet_0001\.nii\.gz has " + what
                       + r"; the channels of a case must share one voxel grid"):
        check_input_folder(str(tmp_path), ".nii.gz", PET_CT)
    _volume(tmp_path / "pet_0001.nii.gz")
    assert len(check_input_folder(str(tmp_path), ".nii.gz", PET_CT)[0]) == 2


def test_a_channel_read_as_ct_without_air_gets_a_note_not_an_error(tmp_path, capsys):
    """An MR (TotalSegmentator's example_mr_sm: lowest -47) or a CT without its rescale intercept given to a CT task
    is segmented as garbage; it may also be a tight crop, so the command says so and goes on."""
    _volume(tmp_path / "pet_0000.nii.gz")  # all 0: no air
    _volume(tmp_path / "pet_0001.nii.gz")
    assert len(check_input_folder(str(tmp_path), ".nii.gz", PET_CT)) == 1
    err = capsys.readouterr().err
    assert "case pet: " in err and "pet_0000.nii.gz is read as CT, but no voxel is below -500 HU (lowest 0" in err
    assert "pet_0001" not in err  # the PET channel is not read as CT
    image = sitk.GetImageFromArray(np.full((4, 5, 6), -1000, np.int16))
    sitk.WriteImage(image, str(tmp_path / "pet_0000.nii.gz"))
    check_input_folder(str(tmp_path), ".nii.gz", None, [CT, PET_CT])  # --all-tasks: the tasks it runs
    assert capsys.readouterr().err == ""


def test_hu_channels_are_those_every_task_of_the_channel_count_reads_as_ct():
    mr = TaskSpec("brain", "Dataset003_Brain", {"0": "MR"}, {"background": 0, "tumour": 1})
    assert hu_channels([CT, PET_CT], 2) == {0} and hu_channels([CT, PET_CT], 1) == {0}
    assert hu_channels([CT, mr], 1) == set() and hu_channels([CT], 3) == set()


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
