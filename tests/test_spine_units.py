"""Unit tests of the spine, built in-process on tiny configurations: network shapes and conditioning, stems,
class slicing, task-balanced sampling, registry validation, all-tasks merging."""
from __future__ import annotations

import pydoc

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn

from nnunetv2_universal.collection.sampling import TaskSchedule
from nnunetv2_universal.collection.templates import PAPER
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.inference.merge import GlobalLabels, merge_task_segmentations
from nnunetv2_universal.networks.blocks import UnsupportedChannelCountError
from nnunetv2_universal.networks.uniseg import UniSegNetwork
from nnunetv2_universal.registry import RegistryError, TaskRegistry, TaskSpec, UnknownTaskError
from nnunetv2_universal.training.uniseg_trainer import TaskSlicedLoss

TINY = dict(input_channels=1, n_stages=4, features_per_stage=[4, 8, 16, 16], conv_op=nn.Conv3d,
            kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
            n_conv_per_stage=2, num_classes=4, n_conv_per_stage_decoder=2, num_tasks=3, patch_size=[16, 32, 32],
            stem_channels=[1, 2, 4], norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def tiny(**overrides) -> UniSegNetwork:
    torch.manual_seed(0)
    net = UniSegNetwork(**{**TINY, **overrides})
    net.apply(net.initialize)
    return net


def test_paper_configuration_matches_reference_parameter_count():
    kwargs = dict(PAPER["arch_kwargs"])
    for k in PAPER["_kw_requires_import"]:
        kwargs[k] = pydoc.locate(kwargs[k]) if kwargs[k] else None
    net = UniSegNetwork(input_channels=1, num_classes=4, num_tasks=11, patch_size=[64, 192, 192],
                        stem_channels=[1, 2, 4], deep_supervision=True, **kwargs)
    assert sum(p.numel() for p in net.parameters()) == 32_114_381
    assert sum(p.numel() for p in net.fuse.parameters()) == 939_261
    assert tuple(net.prompt.shape) == (1, 11, 4, 6, 6)


def test_deep_supervision_outputs_highest_resolution_first():
    net = tiny()
    out = net(torch.randn(2, 1, 16, 32, 32), 0)
    assert [tuple(o.shape) for o in out] == [(2, 4, 16, 32, 32), (2, 4, 16, 16, 16), (2, 4, 8, 8, 8)]
    net.decoder.deep_supervision = False
    assert tuple(net(torch.randn(2, 1, 16, 32, 32), 0).shape) == (2, 4, 16, 32, 32)


def test_tasks_change_the_output_and_condition_paths_agree():
    net = tiny(deep_supervision=False).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        a, b = net(x, 0), net(x, 1)
        assert not torch.allclose(a, b)
        assert torch.equal(net(x, Condition(task=1)), b)
        with net.conditioned(Condition(task=1)):
            assert torch.equal(net(x), b)
        both = net.forward_tasks(x, [0, 1])
        assert torch.equal(both[0], a) and torch.equal(both[1], b)
    with pytest.raises(ValueError, match="condition"):
        net(x)


def test_stem_dispatch_by_channel_count():
    net = tiny(deep_supervision=False)
    for c in (1, 2, 4):
        assert net(torch.randn(1, c, 16, 32, 32), 0).shape[1] == 4
    with pytest.raises(UnsupportedChannelCountError, match=r"\[1, 2, 4\]"):
        net(torch.randn(1, 3, 16, 32, 32), 0)
    net.zero_grad()
    net(torch.randn(1, 2, 16, 32, 32), 0).sum().backward()
    assert net.stem.conv_2.weight.grad.abs().sum() > 0
    for unused in (net.stem.conv_1, net.stem.conv_4):  # touched with weight 0 (DDP), so zero, not None
        assert torch.count_nonzero(unused.weight.grad) == 0


def test_wrong_patch_size_is_rejected():
    with pytest.raises(ValueError, match="prompt"):
        tiny()(torch.randn(1, 1, 16, 64, 64), 0)


def test_channels_beyond_task_classes_get_no_gradient():
    net = tiny(deep_supervision=False)
    loss = TaskSlicedLoss(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                                         weight_ce=1, weight_dice=1, ignore_label=None,
                                         dice_class=MemoryEfficientSoftDiceLoss))
    x = torch.randn(2, 1, 16, 32, 32)
    target = torch.randint(0, 2, (2, 1, 16, 32, 32)).float()
    with pytest.raises(RuntimeError, match="num_classes"):
        loss(net(x, 0), target)
    loss.num_classes = 2
    logits = net(x, 0)
    logits.retain_grad()
    loss(logits, target).backward()
    assert torch.count_nonzero(logits.grad[:, 2:]) == 0 and torch.count_nonzero(logits.grad[:, :2]) > 0
    assert torch.count_nonzero(net.decoder.seg_layers[-1].weight.grad[2:]) == 0


def test_task_schedule_is_balanced_per_round_and_seeded():
    schedule = TaskSchedule([0, 1, 2], batches_per_task=50, seed=0)
    for _ in range(3):
        block = [next(schedule) for _ in range(150)]
        assert [block.count(t) for t in range(3)] == [50, 50, 50]
    a = [next(TaskSchedule([0, 1, 2], 5, seed=1)) for _ in range(1)]
    orders = {tuple(next(s) for _ in range(15)) for s in (TaskSchedule([0, 1, 2], 5, seed=k) for k in range(4))}
    assert len(orders) > 1 and a
    with pytest.raises(ValueError):
        TaskSchedule([], 5, 0)


def _spec(name, classes=2, channels=None, **kw):
    labels = {"background": 0, **{f"c{i}": i for i in range(1, classes)}}
    return TaskSpec(name=name, dataset=f"Dataset001_{name}", channels=channels or {"0": "CT"}, labels=labels, **kw)


def test_registry_validation_and_lookup_messages():
    reg = TaskRegistry([_spec("Liver", 3), _spec("Prostate", 2, {"0": "T2"}), _spec("Brain", 4, {str(i): m for i, m in enumerate(["T1", "T1ce", "T2", "FLAIR"])})],
                       {"Liver__a": "Liver", "Brain__b": "Brain"})
    assert reg.task("Liver").normalization == ["ct_window"] and reg.task("Prostate").normalization == ["zscore"]
    assert reg.max_num_classes == 4 and reg.channel_counts == [1, 4]
    assert reg.tasks_for_channels(1) == [0, 1] and reg.tasks_for_channels(1, ["ct"]) == [0]
    assert reg.condition("Brain").task == 2
    with pytest.raises(UnknownTaskError, match="Liver, Prostate, Brain"):
        reg.index("Kidney")
    with pytest.raises(ValueError, match="one task"):
        reg.task_of_batch(["Liver__a", "Brain__b"])
    assert TaskRegistry.from_dict(reg.to_dict()).to_dict() == reg.to_dict()
    with pytest.raises(RegistryError, match="duplicate"):
        TaskRegistry([_spec("A"), _spec("A")])
    with pytest.raises(RegistryError, match="unknown tasks"):
        TaskRegistry([_spec("A")], {"x": "B"})
    for bad in (dict(labels={"background": 0, "a": 2}), dict(labels={"bg": 0, "a": 1}),
                dict(normalization=["minmax"]), dict(spacing=[1, 0, 1]), dict(name="1abc")):
        entry = {**_spec("A").to_dict(), **bad}
        with pytest.raises(RegistryError):
            TaskSpec.from_dict(entry)


def test_merge_priority_rules():
    reg = TaskRegistry([_spec("A", 3), _spec("B", 2), _spec("C", 2)])
    labels = GlobalLabels(reg)
    assert labels.to_dict() == {"background": 0, "A:c1": 1, "A:c2": 2, "B:c1": 3, "C:c1": 4}
    a = np.array([[1, 2, 0, 0]])
    b = np.array([[1, 1, 1, 0]])
    np.testing.assert_array_equal(merge_task_segmentations({0: a, 1: b}, labels), [[3, 3, 3, 0]])
    np.testing.assert_array_equal(merge_task_segmentations({0: a, 1: b}, labels, priority=[1, 0]), [[1, 2, 3, 0]])
    # unlisted tasks go underneath the listed ones
    np.testing.assert_array_equal(merge_task_segmentations({0: a, 1: b}, labels, priority=[0]), [[1, 2, 3, 0]])
    with pytest.raises(ValueError):
        merge_task_segmentations({0: a, 1: np.zeros((2, 2), int)}, labels)


def test_task_balanced_loader_draws_single_task_balanced_batches():
    from types import SimpleNamespace

    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunetv2_universal.collection.sampling import TaskBalancedDataLoader
    cases = {f"a{i}": 0 for i in range(10)} | {f"b{i}": 1 for i in range(3)} | {"c0": 2}
    data = SimpleNamespace(identifiers=sorted(cases))

    def loader(rank=0):
        return TaskBalancedDataLoader(data, 2, (8, 8, 8), (8, 8, 8), LabelManager({"background": 0, "x": 1}, None),
                                      case_tasks=cases, batches_per_task=10, rank=rank)
    dl = loader()
    draws = []
    for _ in range(60):
        keys = dl.get_indices()
        assert len(keys) == 2 and {cases[k] for k in keys} == {dl.last_task}
        draws.append(dl.last_task)
    for start in (0, 30):
        assert [draws[start:start + 30].count(t) for t in range(3)] == [10, 10, 10]
    other = loader(rank=1)
    assert [other.get_indices() and other.last_task for _ in range(30)] != draws[:30]  # per-rank schedules
    with pytest.raises(KeyError):
        TaskBalancedDataLoader(SimpleNamespace(identifiers=["zz"]), 2, (8, 8, 8), (8, 8, 8),
                               LabelManager({"background": 0, "x": 1}, None), case_tasks=cases)
