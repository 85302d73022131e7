"""Orientation-safe reading and prediction: the same image stored in three orientations (as stored, x and y
flipped, slice-first permutation) reaches the network as one array and its segmentation is written back in each
input's own geometry, voxel for voxel the same in world space; a network trained without mirroring segments the
flipped copy as it segments the original, and only with reorientation on."""
from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from conftest import COLLECTION_ID, PLANS, run
from nnunetv2_universal.orientation import (ORIENTATION_KEY, REORIENT_ENV, OrientedPlansManager, file_orientation,
                                            orientation_counts, orientation_report, reorienting_reader,
                                            segmentation_in_input_order, training_orientation)

SPACING = (0.8, 1.1, 2.5)  # x, y, z


def _three_storages(array: np.ndarray, folder: str, name: str, spacing=SPACING, origin=(10.0, -5.0, 3.0)) -> dict:
    """Write `array` (z, y, x; identity direction) three times with the same world content, built by hand (not by
    the code under test): as is (LPS), x and y flipped (RAS) and slice-first (x <-> z swapped). Returns
    {storage: (path, function mapping an array in the original voxel order to that storage's order)}."""
    os.makedirs(folder, exist_ok=True)
    nz, ny, nx = array.shape
    sx, sy, sz = spacing
    storages = {
        "as_stored": (array, spacing, origin, (1, 0, 0, 0, 1, 0, 0, 0, 1), lambda a: a),
        "flipped": (array[:, ::-1, ::-1], spacing,
                    (origin[0] + (nx - 1) * sx, origin[1] + (ny - 1) * sy, origin[2]),
                    (-1, 0, 0, 0, -1, 0, 0, 0, 1), lambda a: a[:, ::-1, ::-1]),
        # new x axis = old z (world +z), new z axis = old x (world +x)
        "slice_first": (array.transpose(2, 1, 0), (sz, sy, sx), origin, (0, 0, 1, 0, 1, 0, 1, 0, 0),
                        lambda a: a.transpose(2, 1, 0)),
    }
    out = {}
    for key, (values, sp, org, direction, to_storage) in storages.items():
        image = sitk.GetImageFromArray(np.ascontiguousarray(values))
        image.SetSpacing(sp)
        image.SetOrigin(org)
        image.SetDirection(direction)
        path = join(folder, f"{name}_{key}_0000.nii.gz")
        sitk.WriteImage(image, path, True)
        out[key] = (path, to_storage)
    return out


def _geometry(path: str) -> tuple:
    image = sitk.ReadImage(path)
    return image.GetSize(), np.round(image.GetSpacing(), 5).tolist(), np.round(image.GetOrigin(), 4).tolist(), \
        np.round(image.GetDirection(), 5).tolist()


def test_three_storages_read_as_one_array_and_segmentations_go_back_to_each_inputs_geometry(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(0, 100, (5, 7, 9)).astype(np.float32)
    storages = _three_storages(array, str(tmp_path / "in"), "case")
    assert {k: file_orientation(p) for k, (p, _) in storages.items()} == \
        {"as_stored": "LPS", "flipped": "RAS", "slice_first": "SPL"}
    reader = reorienting_reader("RAS")()
    arrays, properties = {}, {}
    for key, (path, _) in storages.items():
        arrays[key], properties[key] = reader.read_images([path])
        assert properties[key]["spacing"] == pytest.approx([2.5, 1.1, 0.8])  # z, y, x as nnU-Net expects
    for key in storages:
        np.testing.assert_array_equal(arrays[key], arrays["flipped"])  # the RAS storage is read unchanged
    # an asymmetric "segmentation" of the array the network sees, written back through each case's properties
    seg = (arrays["flipped"][0] > 0).astype(np.uint8) + (np.arange(9)[None, None, :] > 5).astype(np.uint8)
    reference = None
    for key, (path, to_storage) in storages.items():
        out = str(tmp_path / f"seg_{key}.nii.gz")
        reader.write_seg(seg, out, properties[key])
        assert _geometry(out) == _geometry(path)  # the input's own size, spacing, origin and direction
        written = sitk.GetArrayFromImage(sitk.ReadImage(out))
        if reference is None:  # as_stored: in the original voxel order
            reference = written
        np.testing.assert_array_equal(written, to_storage(reference))  # voxel for voxel in world space
    assert len(np.unique(reference)) == 3
    # --all-tasks merges tasks of possibly different training orientations in the input's own voxel order
    for key, (path, to_storage) in storages.items():
        in_order, props = segmentation_in_input_order(seg, properties[key])
        np.testing.assert_array_equal(in_order, to_storage(reference))
        out = str(tmp_path / f"merged_{key}.nii.gz")
        SimpleITKIO().write_seg(in_order, out, props)
        assert _geometry(out) == _geometry(path)


def _read_shape(reader, path):
    return reader.read_images([path])[0].shape


@pytest.mark.parametrize("degrees,axis,handedness", [(20, 2, 1), (45, 2, -1), (60, 2, 1), (60, 0, -1), (135, 0, 1)])
def test_oblique_images_go_back_voxel_for_voxel(tmp_path, degrees, axis, handedness):
    """Oblique acquisitions (rotated direction cosines, right- or left-handed): read into the training orientation
    by the closest axis permutation / flip and written back with the input's own voxels and geometry."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(3)
    rotation[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
    labels = np.random.default_rng(degrees).integers(0, 4, (7, 9, 11)).astype(np.uint8)
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((5.0, -3.0, 2.0))
    image.SetDirection(tuple((rotation @ np.diag([-1.0, 1.0, handedness])).ravel()))
    sitk.WriteImage(image, str(tmp_path / "in.nii.gz"))
    io = reorienting_reader("RAS")()
    data, properties = io.read_images([str(tmp_path / "in.nii.gz")])
    assert sorted(data.shape[1:]) == sorted(labels.shape)  # a permutation, no resampling
    io.write_seg(data[0].astype(np.uint8), str(tmp_path / "out.nii.gz"), properties)
    back = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing())


def test_readers_pickle_into_spawned_workers(tmp_path):
    """nnU-Net hands readers to worker pools (evaluation, export): a fresh process must resolve the class by name."""
    import multiprocessing
    import pickle
    path = _three_storages(np.zeros((3, 4, 5), np.float32), str(tmp_path), "c")["slice_first"][0]
    reader = reorienting_reader("RAS")()
    assert type(pickle.loads(pickle.dumps(reader))) is type(reader)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.starmap(_read_shape, [(reader, path)]) == [(1, 3, 4, 5)]


def test_plans_manager_reorients_only_with_a_recorded_orientation_and_when_on(monkeypatch):
    plans = {"plans_name": "P", "image_reader_writer": "SimpleITKIO", "configurations": {},
             ORIENTATION_KEY: "RAS"}
    assert OrientedPlansManager(plans).image_reader_writer_class.target_orientation == "RAS"
    assert OrientedPlansManager(plans, reorient=False).image_reader_writer_class is SimpleITKIO
    assert OrientedPlansManager({**plans, ORIENTATION_KEY: None}).image_reader_writer_class is SimpleITKIO
    monkeypatch.setenv(REORIENT_ENV, "0")
    assert OrientedPlansManager(plans).image_reader_writer_class is SimpleITKIO


def test_orientation_report_names_mixed_members(tmp_path):
    storages = _three_storages(np.zeros((3, 4, 5), np.float32), str(tmp_path), "c")
    counts = orientation_counts(p for p, _ in storages.values())
    assert counts == {"LPS": 1, "RAS": 1, "SPL": 1}
    assert training_orientation(counts) == "LPS"  # ties: alphabetical
    lines = orientation_report({"Dataset001_A": counts, "Dataset002_B": orientation_counts([storages["flipped"][0]])})
    assert lines[0].startswith("Dataset001_A: training cases stored in 3 orientations")
    assert lines[1] == "members stored in different orientations: Dataset001_A (LPS), Dataset002_B (RAS); each " \
                       "task's images are brought to its own training orientation"
    assert orientation_report({"Dataset001_A": orientation_counts([storages["flipped"][0]])}) == []


@pytest.mark.integration
def test_a_network_trained_without_mirroring_segments_every_storage_alike(collection_workspace, tmp_path,
                                                                          monkeypatch):
    """Trained briefly (no mirroring), then `nnUNetv2_universal_predict --task`, `--all-tasks` and stock
    `nnUNetv2_predict` on one held-out CT stored three ways: identical labels in world space; with --no_reorient
    the flipped copy is not."""
    from nnunetv2_universal.training.variants.short_schedules import UniSegTrainerTaskHeads_cpuDemo
    env = collection_workspace["env"]
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    results = tmp_path / "results"
    pre = join(env["nnUNet_preprocessed"], f"Dataset{COLLECTION_ID}_Synth")
    plans, dataset_json = load_json(join(pre, f"{PLANS}.json")), load_json(join(pre, "dataset.json"))
    assert {s["orientation"] for s in plans["configurations"]["3d_fullres"]["universal_tasks"].values()} == {"LPS"}

    class Brief(UniSegTrainerTaskHeads_cpuDemo):  # saved under its parent's name, which nnU-Net's lookup finds
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs, self.num_val_iterations_per_epoch = 4, 1
            self.output_folder_base = str(results / f"Dataset{COLLECTION_ID}_Synth" /
                                          f"UniSegTrainerTaskHeads_cpuDemo__{PLANS}__3d_fullres")
            self.output_folder = join(self.output_folder_base, "fold_0")
            self.log_file = join(self.output_folder, "training_log.txt")

        def perform_actual_validation(self, save_probabilities: bool = False):
            pass
    Brief.__name__ = "UniSegTrainerTaskHeads_cpuDemo"
    torch.manual_seed(0)
    trainer = Brief(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.run_training()
    assert trainer.inference_allowed_mirroring_axes is None

    member = join(env["nnUNet_raw"], "Dataset501_SynthLiverCT")
    case = sorted(os.listdir(join(member, "imagesTs")))[0]
    image = sitk.ReadImage(join(member, "imagesTs", case))
    storages = _three_storages(sitk.GetArrayFromImage(image), str(tmp_path / "in"), "liver", image.GetSpacing(),
                               image.GetOrigin())
    common = ["-d", COLLECTION_ID, "-tr", "UniSegTrainerTaskHeads_cpuDemo", "-p", PLANS, "-f", "0", "-device",
              "cpu", "-npp", "0", "-nps", "0"]
    extra = {"nnUNet_results": str(results)}
    run(["nnUNetv2_universal_predict", "-i", tmp_path / "in", "-o", tmp_path / "task", "--task", "SynthLiverCT",
         *common], env, extra)
    run(["nnUNetv2_universal_predict", "-i", tmp_path / "in", "-o", tmp_path / "raw_order", "--task", "SynthLiverCT",
         "--no_reorient", *common], env, extra)
    proc = run(["nnUNetv2_universal_predict", "-i", tmp_path / "in", "-o", tmp_path / "all", "--all-tasks", *common],
               env, extra)
    assert "liver_flipped: " in proc.stdout and "preprocessing group(s) x 1 mirroring pass(es) = " in proc.stdout
    # the CPU fast path (no mirroring; bf16 where the CPU has it) agrees with the default (docs/performance.md)
    proc = run(["nnUNetv2_universal_predict", "-i", tmp_path / "in", "-o", tmp_path / "fast", "--task", "SynthLiverCT",
                "--fast", *common], env, extra)
    assert "--fast: one pass per tile (tiles mirrored in turn), " in proc.stderr
    run(["nnUNetv2_predict", "-i", tmp_path / "in", "-o", tmp_path / "stock", "-c", "3d_fullres", *common], env,
        {**extra, "nnUNet_universal_task": "SynthLiverCT"})
    def read(folder, key):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / folder / f"liver_{key}.nii.gz")))
    reference = read("task", "as_stored")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(join(member, "labelsTs", case.replace("_0000", ""))))
    dice = 2 * ((reference == 1) & (truth == 1)).sum() / ((reference == 1).sum() + (truth == 1).sum())
    assert dice > 0.5  # the brief training learned the organ: the comparison below is not between empty maps
    fast = read("fast", "as_stored")
    agreement = 2 * ((fast == 1) & (reference == 1)).sum() / ((fast == 1).sum() + (reference == 1).sum())
    assert agreement >= 0.98, agreement
    merged = read("all", "as_stored")
    assert (merged > 0).any()
    for key, (path, to_storage) in storages.items():
        assert _geometry(str(tmp_path / "task" / f"liver_{key}.nii.gz")) == _geometry(path)
        np.testing.assert_array_equal(read("all", key), to_storage(merged))
        np.testing.assert_array_equal(read("task", key), to_storage(reference))
        np.testing.assert_array_equal(read("stock", key), to_storage(reference))
    # as stored, the flipped copy shows the network another image: without reorientation its labels differ
    assert not np.array_equal(read("raw_order", "flipped"), storages["flipped"][1](reference))
