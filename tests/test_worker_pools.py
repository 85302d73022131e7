"""One worker runs in this process: nnU-Net's spawn pools become a thread of this process for -np 1 /
nnUNet_def_n_proc=1, with the calls nnU-Net makes on them, and everything is put back afterwards."""
from __future__ import annotations

import multiprocessing
import os
import types

import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_universal.worker_pools import pools_in_process


def _pid_times(x, y):
    return os.getpid(), x * y


def _nnunet_like_module():
    return types.SimpleNamespace(multiprocessing=multiprocessing, Pool=multiprocessing.Pool)


@pytest.mark.parametrize("workers, in_process", [(1, True), (0, True), (2, False)])
def test_pools_run_in_this_process_only_for_one_worker(workers, in_process):
    module = _nnunet_like_module()
    with pools_in_process(workers, module):
        if not in_process:
            assert module.multiprocessing is multiprocessing and module.Pool is multiprocessing.Pool
            return
        # as nnU-Net uses them: with-block, starmap_async + ready(), the original workers' is_alive()
        with module.multiprocessing.get_context("spawn").Pool(8) as pool:
            workers_alive = all(w.is_alive() for w in pool._pool)
            result = pool.starmap_async(_pid_times, ((3, 4),))
            assert result.get(timeout=10) == [(os.getpid(), 12)] and result.ready() and workers_alive
        with module.Pool(processes=12) as pool:
            assert pool.starmap(_pid_times, [(1, 2), (2, 3)]) == [(os.getpid(), 2), (os.getpid(), 6)]
        assert module.multiprocessing.cpu_count() == multiprocessing.cpu_count()  # the rest is the real module
    assert module.multiprocessing is multiprocessing and module.Pool is multiprocessing.Pool  # put back


def test_planning_a_member_with_one_worker_starts_no_process(tmp_path, monkeypatch):
    """plan_and_preprocess's per-member step (nnU-Net's integrity check, fingerprint, planner, file listing) with
    -np 1: no process is started, and the fingerprint is nnU-Net's."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    from nnunetv2_universal.collection import plan_and_preprocess
    from nnunetv2_universal.registry import TaskSpec
    raw, pre = tmp_path / "raw" / "Dataset871_Tiny", tmp_path / "pre"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    for case in ("a", "b"):
        image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(6, 8, 10)).astype(np.float32))
        image.SetSpacing((1.0, 2.0, 3.0))
        mask = np.zeros((6, 8, 10), np.uint8)
        mask[2:4, 2:5, 3:7] = 1
        label = sitk.GetImageFromArray(mask)
        label.CopyInformation(image)
        sitk.WriteImage(image, str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(label, str(raw / "labelsTr" / f"{case}.nii.gz"))
    generate_dataset_json(str(raw), {0: "MR"}, {"background": 0, "x": 1}, 2, ".nii.gz")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))  # nnU-Net 2.8 reads its paths when used
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    analyse = DatasetFingerprintExtractor.analyze_case  # nnU-Net samples 10^8 intensities in all; 1000 do here
    monkeypatch.setattr(DatasetFingerprintExtractor, "analyze_case",
                        staticmethod(lambda images, seg, reader, num_samples: analyse(images, seg, reader, 1000)))

    def no_process(self):
        raise AssertionError(f"a process was started: {self}")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_process)
    task = TaskSpec("Tiny", "Dataset871_Tiny", {"0": "MR"}, {"background": 0, "x": 1})
    settings = plan_and_preprocess._member_settings(task, "Dataset871_Tiny", 1, True)
    fingerprint = load_json(str(pre / "Dataset871_Tiny" / "dataset_fingerprint.json"))
    assert fingerprint["spacings"] == [[3.0, 2.0, 1.0]] * 2 and fingerprint["shapes_after_crop"] == [[6, 8, 10]] * 2
    assert settings["spacing"] == [3.0, 2.0, 1.0] and settings["median_image_size_in_voxels"] == [6, 8, 10]
