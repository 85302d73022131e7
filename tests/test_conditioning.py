"""The task condition decides what is segmented: the condition diagnostic, and a short training on shared anatomy
(both CT tasks see liver, lesion and kidneys in every image; each labels only its own) that a conditioned network
passes and a condition-blind one fails."""
from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import PLANS
from nnunetv2_universal.demo.synthetic import ABDOMEN_STRUCTURES, SYNTHETIC_TASKS, make_synthetic_datasets
from nnunetv2_universal.training.condition_diagnostic import (CONDITION_KEY, CONDITION_PER_TASK_KEY,
                                                              ConditionSensitivityLogging)
from nnunetv2_universal.training.task_logging import TaskAwareLocalLogger


class _Logged(ConditionSensitivityLogging):
    """The parts of a trainer the diagnostic uses."""

    def __init__(self, num_epochs=20):
        from nnunetv2.training.logging.nnunet_logger import MetaLogger
        self.logger = MetaLogger(None, False)
        self.logger.local_logger = TaskAwareLocalLogger(["A", "B", "C"])
        self.num_epochs, self.current_epoch, self.printed = num_epochs, 0, []

    def print_to_log_file(self, *args, **kwargs):
        self.printed.append(" ".join(map(str, args)))


def test_sensitivity_is_one_minus_dice_pooled_over_batches():
    trainer = _Logged()
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 8 voxels
    b = torch.zeros_like(a)
    b[0, 1:3] = True  # 8 voxels, 4 shared
    trainer.record_condition_overlap(0, 1, a, b)
    trainer.record_condition_overlap(0, 1, a, a)  # second batch: identical
    trainer.record_condition_overlap(1, 0, b, torch.zeros_like(b))
    value = trainer.log_condition_sensitivity(["A", "B", "C"])
    pair01 = 1 - 2 * (4 + 8) / (16 + 16)
    assert value == pytest.approx((pair01 + 1.0) / 2)
    assert trainer.logger.get_value(CONDITION_PER_TASK_KEY, -1) == pytest.approx({"A": pair01, "B": 1.0})


def test_no_pairs_logs_nan_and_warns_only_when_blind():
    trainer = _Logged(num_epochs=20)  # warning epoch: max(5, 20 // 10) = 5
    assert np.isnan(trainer.log_condition_sensitivity(["A", "B", "C"]))
    same = torch.ones(1, 3, 3, dtype=torch.bool)
    for epoch in range(1, 8):
        trainer.current_epoch = epoch
        trainer.record_condition_overlap(0, 1, same, same)
        trainer.log_condition_sensitivity(["A", "B", "C"])
    warnings = [p for p in trainer.printed if "ignores its task prompt" in p]
    assert len(warnings) == 1 and "after 5 epochs" in warnings[0]
    conditioned = _Logged(num_epochs=20)
    other = torch.zeros_like(same)
    for epoch in range(8):
        conditioned.current_epoch = epoch
        conditioned.record_condition_overlap(0, 1, same, other)
        assert conditioned.log_condition_sensitivity(["A", "B", "C"]) == 1.0
    assert not [p for p in conditioned.printed if "ignores" in p]


def test_logger_draws_the_sensitivity_and_loads_older_checkpoints(tmp_path):
    logger = TaskAwareLocalLogger(["A", "B"])
    for epoch in range(3):
        for key, value in (("mean_fg_dice", 0.5), ("ema_fg_dice", 0.5), ("dice_per_class_or_region", [0.5]),
                           ("train_losses", 1.0), ("val_losses", 1.0), ("lrs", 0.01),
                           ("epoch_start_timestamps", epoch), ("epoch_end_timestamps", epoch + 1),
                           ("task_pseudo_dice", {"A": 0.5}), (CONDITION_KEY, 0.1 * epoch),
                           (CONDITION_PER_TASK_KEY, {"A": 0.1 * epoch})):
            logger.log(key, value, epoch)
    logger.plot_progress_png(str(tmp_path))
    assert os.path.getsize(tmp_path / "progress.png") > 0
    old = {k: v for k, v in logger.my_fantastic_logging.items() if k not in (CONDITION_KEY, CONDITION_PER_TASK_KEY)}
    fresh = TaskAwareLocalLogger(["A", "B"])
    fresh.load_checkpoint(old)
    assert len(fresh.my_fantastic_logging[CONDITION_KEY]) == 3


def test_synthetic_ct_tasks_share_anatomy_with_partial_labels(tmp_path):
    """Every CT image of either CT dataset shows liver, lesion and kidneys; each dataset labels only its own."""
    names = make_synthetic_datasets(str(tmp_path), 501, num_train=3, num_test=2, seed=4)
    tasks = {t.name: t for t in SYNTHETIC_TASKS}
    for name in names[:2]:
        task = tasks[name.split("_", 1)[1]]
        for case in sorted(os.listdir(tmp_path / name / "structuresTs")):
            structures = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / "structuresTs" / case)))
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / "labelsTs" / case)))
            assert set(np.unique(structures)) == {0, *ABDOMEN_STRUCTURES.values()}
            np.testing.assert_array_equal(label, task.label_map(structures))
            others = [v for s, v in ABDOMEN_STRUCTURES.items() if s not in task.labelled.values()]
            assert not label[np.isin(structures, others)].any()  # the other task's structures are background
    # the two CT datasets come from one image model: same intensity statistics within each structure
    liver, kidney = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / n / "imagesTr" / f)))
                     for n, f in ((names[0], "synthliverct_000_0000.nii.gz"),
                                  (names[1], "synthkidneyct_000_0000.nii.gz")))
    assert abs(float(np.median(liver)) - float(np.median(kidney))) < 30


@pytest.mark.integration
def test_demo_trainer_learns_the_condition_and_a_blind_network_fails(collection_workspace, monkeypatch):
    """A few hundred CPU iterations of the demo's trainer separate the two CT tasks on shared anatomy; the same
    network made blind to its condition labels the other task's structure (and the diagnostic reads 0)."""
    from nnunetv2_universal.demo.held_out import HeldOut
    from nnunetv2_universal.demo.run_demo import demo_trainer_class
    env = collection_workspace["env"]
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setattr("nnunetv2.paths.nnUNet_raw", env["nnUNet_raw"])
    pre = join(env["nnUNet_preprocessed"], "Dataset900_Synth")
    plans, dataset_json = load_json(join(pre, f"{PLANS}.json")), load_json(join(pre, "dataset.json"))

    class Short(demo_trainer_class()):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 16  # 16 x 8 batches x 4 tasks = 512 iterations
            self.save_every = 100

        def perform_actual_validation(self, save_probabilities: bool = False):
            pass

    torch.manual_seed(0)
    np.random.seed(0)
    trainer = Short(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.run_training()
    logged = [v for v in trainer.logger.get_value(CONDITION_KEY, None) if not np.isnan(v)]
    assert logged[-1] > 0.5  # NaN: an epoch whose few validation batches held no CT task
    held_out = HeldOut(trainer, 501)
    conditioned = held_out.per_epoch()
    assert set(conditioned) == {"SynthLiverCT", "SynthKidneyCT"}
    assert max(v["cross_activation"] for v in conditioned.values()) <= 0.2, conditioned

    network = trainer._plain_network()
    forward_tasks = network.forward_tasks
    fixed = trainer.registry.condition(0)  # every forward pass runs task 0, whatever it is asked for
    network.forward_tasks = lambda x, conditions: forward_tasks(x, [fixed] * len(conditions))
    blind = held_out.per_epoch()
    assert max(v["cross_activation"] for v in blind.values()) >= 0.5, blind
    trainer.current_epoch = trainer.num_epochs  # one more validation epoch, with the blind network
    _, dl_val = trainer.get_dataloaders()
    trainer.set_deep_supervision_enabled(True)
    trainer.network.eval()
    outputs = [trainer.validation_step(next(dl_val)) for _ in range(4 * len(trainer.registry))]
    trainer.on_validation_epoch_end(outputs)
    # not exactly 0: the tasks cut the same logits to different class counts (2 vs 3) before the argmax
    assert trainer.logger.get_value(CONDITION_KEY, -1) < trainer.condition_warning_threshold
