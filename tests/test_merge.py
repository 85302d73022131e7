"""Unit tests of merging task-local label maps into global labels (`--all-tasks`)."""
from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_universal.inference.merge import GlobalLabels, merge_task_segmentations
from nnunetv2_universal.registry import TaskRegistry, TaskSpec


@pytest.fixture
def labels() -> GlobalLabels:
    registry = TaskRegistry([
        TaskSpec("liver", "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1, "tumor": 2}),
        TaskSpec("spleen", "Dataset002_Spleen", {"0": "CT"}, {"background": 0, "spleen": 1}),
        TaskSpec("kidney", "Dataset003_Kidney", {"0": "CT"}, {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3}),
    ])
    return GlobalLabels(registry)


def test_offsets_and_num_labels(labels):
    assert labels.offsets == [0, 2, 3]
    assert labels.num_labels == 7


def test_global_values_and_lookup_tables(labels):
    assert [labels.global_value(0, k) for k in range(3)] == [0, 1, 2]
    assert [labels.global_value(1, k) for k in range(2)] == [0, 3]
    assert [labels.global_value(2, k) for k in range(4)] == [0, 4, 5, 6]
    np.testing.assert_array_equal(labels.lookup_table(2), [0, 4, 5, 6])
    assert labels.lookup_table(0).dtype == np.uint16


def test_to_dict_names(labels):
    assert labels.to_dict() == {"background": 0, "liver:liver": 1, "liver:tumor": 2, "spleen:spleen": 3,
                                "kidney:kidney": 4, "kidney:tumor": 5, "kidney:cyst": 6}
    # every global value exactly once
    assert sorted(labels.to_dict().values()) == list(range(labels.num_labels))


def _overlapping():
    liver = np.array([[0, 1, 2, 1],
                      [0, 0, 1, 0]], dtype=np.uint8)
    kidney = np.array([[3, 0, 1, 2],
                       [0, 1, 0, 0]], dtype=np.uint8)
    return liver, kidney


def test_merge_default_priority_later_task_wins(labels):
    liver, kidney = _overlapping()
    merged = merge_task_segmentations({0: liver, 2: kidney}, labels)
    expected = np.array([[6, 1, 4, 5],
                         [0, 4, 1, 0]])
    np.testing.assert_array_equal(merged, expected)
    assert merged.dtype == np.uint8 and merged.shape == liver.shape


def test_merge_background_never_overwrites(labels):
    liver, kidney = _overlapping()
    merged = merge_task_segmentations({0: liver, 2: np.zeros_like(kidney)}, labels)
    np.testing.assert_array_equal(merged, liver)  # liver's global values equal its local ones
    # insertion order of the dict does not matter, registry order does
    a = merge_task_segmentations({2: kidney, 0: liver}, labels)
    b = merge_task_segmentations({0: liver, 2: kidney}, labels)
    np.testing.assert_array_equal(a, b)


def test_merge_custom_priority_reverses_winner(labels):
    liver, kidney = _overlapping()
    merged = merge_task_segmentations({0: liver, 2: kidney}, labels, priority=[2, 0])
    expected = np.array([[6, 1, 2, 1],
                         [0, 4, 1, 0]])
    np.testing.assert_array_equal(merged, expected)


def test_merge_unlisted_tasks_go_underneath(labels):
    liver, kidney = _overlapping()
    spleen = np.ones_like(liver)
    # only liver is listed: spleen and kidney are pasted first (registry order: kidney above spleen), liver on top
    merged = merge_task_segmentations({0: liver, 1: spleen, 2: kidney}, labels, priority=[0])
    expected = np.array([[6, 1, 2, 1],
                         [3, 4, 1, 3]])
    np.testing.assert_array_equal(merged, expected)


def test_merge_shape_mismatch_raises(labels):
    with pytest.raises(ValueError, match="shape") as info:
        merge_task_segmentations({0: np.zeros((2, 4), np.uint8), 1: np.zeros((2, 5), np.uint8)}, labels)
    assert "spleen" in str(info.value)


def test_merge_empty_raises(labels):
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_task_segmentations({}, labels)


def test_merge_uses_uint16_for_many_labels():
    many = {"background": 0, **{f"c{i}": i for i in range(1, 200)}}
    registry = TaskRegistry([TaskSpec("a", "D1", {"0": "CT"}, many), TaskSpec("b", "D2", {"0": "CT"}, many)])
    gl = GlobalLabels(registry)
    assert gl.num_labels == 1 + 2 * 199
    seg = np.array([[0, 199]], dtype=np.uint8)
    merged = merge_task_segmentations({1: seg}, gl)
    assert merged.dtype == np.uint16
    np.testing.assert_array_equal(merged, [[0, 398]])


def test_all_tasks_runs_ct_tasks_on_ct_images_and_mr_tasks_on_mr_images(tmp_path, capsys):
    """1-channel CT and MR tasks in one model: a CT image (Hounsfield units) gets the CT tasks only, an MR image the
    MR task only; --any-modality widens to every 1-channel task."""
    import SimpleITK as sitk
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2_universal.inference.predictor import UniversalPredictor
    registry = TaskRegistry([
        TaskSpec("liver", "Dataset001_Liver", {"0": "CT"}, {"background": 0, "liver": 1}),
        TaskSpec("prostate", "Dataset002_Prostate", {"0": "T2"}, {"background": 0, "prostate": 1}),
        TaskSpec("spleen", "Dataset003_Spleen", {"0": "CT"}, {"background": 0, "spleen": 1}),
    ])
    ct, mr = np.full((4, 8, 8), -1024.0), np.zeros((4, 8, 8))
    ct[1:3, 2:6, 2:6], mr[1:3, 2:6, 2:6] = 60.0, 800.0
    files = {}
    for name, array in (("ct", ct), ("mr", mr)):
        files[name] = str(tmp_path / f"{name}_0000.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), files[name])
    predictor = UniversalPredictor.__new__(UniversalPredictor)
    predictor.registry = registry
    predictor.plans_manager = type("Plans", (), {"image_reader_writer_class": SimpleITKIO})()
    assert predictor._same_modality_tasks([files["ct"]], [0, 1, 2]) == [0, 2]
    assert predictor._same_modality_tasks([files["mr"]], [0, 1, 2]) == [1]
    ran = {}
    predictor._segment_case = lambda image_files, groups, name: (ran.setdefault(image_files[0], []).extend(
        v.index for views in groups for v in views), ({}, {}))[1]
    predictor.view = lambda t: type("View", (), {"index": t, "preprocessing_signature": t})()
    predictor.dataset_json = {"file_ending": ".nii.gz"}
    predictor.plans_manager.image_reader_writer_class = type("NoWrite", (SimpleITKIO,), {
        "write_seg": lambda self, seg, path, props: None})
    import nnunetv2_universal.inference.predictor as module
    original = module.merge_task_segmentations
    module.merge_task_segmentations = lambda per_task, labels, order: np.zeros(1)
    try:
        predictor.predict_all_tasks([[files["ct"]], [files["mr"]]], [str(tmp_path / "ct"), str(tmp_path / "mr")])
        assert ran == {files["ct"]: [0, 2], files["mr"]: [1]}
        assert "ct: liver, spleen" in capsys.readouterr().out
        ran.clear()
        predictor.predict_all_tasks([[files["mr"]]], [str(tmp_path / "mr")], any_modality=True)
        assert ran == {files["mr"]: [0, 1, 2]}
    finally:
        module.merge_task_segmentations = original


def test_all_tasks_names_a_case_that_lost_a_channel_file(capsys):
    """A prostate folder (T2 + ADC) where one case lost its ADC file: the case is named before anything runs; a
    channel count no task takes stops with the case id."""
    from nnunetv2_universal.inference.input_checks import PredictionInputError, check_channel_counts
    registry = TaskRegistry([
        TaskSpec("prostate", "Dataset002_Prostate", {"0": "T2", "1": "ADC"}, {"background": 0, "prostate": 1}),
        TaskSpec("gland", "Dataset003_Gland", {"0": "T2"}, {"background": 0, "gland": 1}),
    ])
    cases = [["in/p1_0000.nii.gz", "in/p1_0001.nii.gz"], ["in/p2_0000.nii.gz"], ["in/p3_0000.nii.gz",
                                                                                "in/p3_0001.nii.gz"]]
    check_channel_counts(cases, ".nii.gz", registry)
    assert "p2 have fewer channel files than others (2)" in capsys.readouterr().err
    with pytest.raises(PredictionInputError, match="case p4: 3 channel file"):
        check_channel_counts([["in/p4_0000.nii.gz", "in/p4_0001.nii.gz", "in/p4_0002.nii.gz"]], ".nii.gz", registry)
