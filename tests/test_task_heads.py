"""MultiTalent-style task heads on the UniSeg backbone: output layout, argmax semantics, and a loss that only ever
touches the batch's own task's channels."""
from __future__ import annotations

import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.networks.task_heads import SigmoidTaskLoss, TaskHeadsUNet, one_hot_regions

TINY = dict(input_channels=1, n_stages=3, features_per_stage=[4, 8, 8], conv_op=nn.Conv3d,
            kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            n_conv_per_stage=1, num_classes=4, n_conv_per_stage_decoder=1, stem_channels=[1, 2],
            norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU)
CLASSES = [3, 2, 4]  # tasks with 2, 1 and 3 foreground classes


def _network(**kw) -> TaskHeadsUNet:
    torch.manual_seed(0)
    return TaskHeadsUNet(**TINY, task_num_classes=CLASSES, **kw)


def test_heads_have_one_channel_per_task_class_and_each_task_reads_its_own():
    net = _network().eval()
    assert net.decoder.seg_layers[-1].out_channels == 2 + 1 + 3
    assert net.decoder.seg_layers[-1].bias is not None  # a sigmoid channel needs its own prior
    x = torch.randn(2, 1, 4, 16, 16)
    with torch.no_grad():
        raw = net.all_task_logits(x)
        for task, offset, k in ((0, 0, 2), (1, 2, 1), (2, 3, 3)):
            out = net(x, Condition(task=task))
            assert out.shape == (2, 4, 4, 16, 16)
            assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))  # background "logit"
            assert torch.equal(out[:, 1:k + 1], raw[:, offset:offset + k])
            if k + 1 < 4:  # channels beyond the task's classes are never the argmax
                assert (out[:, k + 1:] < out[:, :k + 1].amin(1, keepdim=True)).all()
    # the argmax is the most confident class with probability > 0.5, background where none is
    logits = torch.tensor([[-2.0, -1.0], [0.5, 2.0], [3.0, -4.0]]).T.reshape(1, 2, 3, 1, 1)
    out = net.task_channels(logits, 0)
    assert out[:, :3].argmax(1).flatten().tolist() == [0, 2, 1]


def test_forward_tasks_runs_the_backbone_once_and_keeps_deep_supervision_levels():
    net = _network(deep_supervision=True)
    calls = []
    net.encoder.register_forward_hook(lambda *a: calls.append(1))
    outputs = net.forward_tasks(torch.randn(1, 1, 4, 16, 16), [Condition(task=0), Condition(task=2)])
    assert len(calls) == 1 and len(outputs) == 2
    assert [tuple(o.shape[2:]) for o in outputs[0]] == [(4, 16, 16), (4, 8, 8)]
    assert all(o.shape[1] == 4 for levels in outputs for o in levels)
    with pytest.raises(ValueError, match="out of range"):
        net(torch.randn(1, 1, 4, 16, 16), Condition(task=3))


def test_loss_supervises_only_the_batch_tasks_channels():
    """A spleen-only batch must not push the liver channel of another task anywhere: zero gradient on its head row,
    whatever the image shows."""
    net = _network()
    region = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False},
                             dice_class=MemoryEfficientSoftDiceLoss)
    loss_fn = SigmoidTaskLoss(region)
    x = torch.randn(2, 1, 4, 16, 16)
    target = torch.randint(0, 2, (2, 1, 4, 16, 16)).float()  # task 1: one foreground class
    loss = loss_fn(net(x, Condition(task=1))[:, :2], target)
    loss.backward()
    head = net.decoder.seg_layers[-1]
    grad = head.weight.grad.flatten(1).abs().sum(1)
    assert grad[2] > 0  # task 1's only channel
    assert torch.equal(grad[[0, 1, 3, 4, 5]], torch.zeros(5))
    assert torch.equal(head.bias.grad[[0, 1, 3, 4, 5]], torch.zeros(5))
    # and the loss is nnU-Net's Dice + BCE on the task's sigmoid channel against the one-hot target
    with torch.no_grad():
        expected = region(net.all_task_logits(x)[:, 2:3], target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_batch_that_mixes_tasks_reads_and_scores_each_sample_on_its_own_task():
    """MultiTalent's batches: sample b reads the channels of its task, and its loss is its task's loss on them,
    weighted by the task's share of the batch; no sample trains another task's channels."""
    from nnunetv2_universal.training.uniseg_trainer import TaskSlicedLoss
    net = _network(deep_supervision=True)
    x = torch.randn(3, 1, 4, 16, 16)
    tasks = (1, 0, 1)
    mixed = net(x, Condition(sample_tasks=tasks))
    with torch.no_grad():
        alone = {t: net(x, Condition(task=t)) for t in (0, 1)}
    for level, out in enumerate(mixed):
        for b, t in enumerate(tasks):
            assert torch.allclose(out[b], alone[t][level][b], atol=1e-6)
    loss_fn = TaskSlicedLoss(SigmoidTaskLoss(DC_and_BCE_loss(
        {}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False}, dice_class=MemoryEfficientSoftDiceLoss)))
    target = torch.randint(0, 3, (3, 1, 4, 16, 16))
    target[[0, 2]] = target[[0, 2]].clamp(max=1)  # task 1 has one foreground class
    loss_fn.sample_groups = [([1], 3), ([0, 2], 2)]
    loss = loss_fn(mixed[0], target)
    loss.backward()
    loss_fn.sample_groups = None
    expected = []
    for samples, t in (([1], 0), ([0, 2], 1)):
        loss_fn.num_classes = CLASSES[t]
        expected.append(len(samples) / 3 * loss_fn(alone[t][0][samples], target[samples]).item())
    assert loss.item() == pytest.approx(sum(expected), rel=1e-5)
    grad = net.decoder.seg_layers[-1].weight.grad.flatten(1).abs().sum(1)
    assert (grad[:3] > 0).all() and torch.equal(grad[3:], torch.zeros(3))  # tasks 0 and 1 train, task 2 does not
    with pytest.raises(ValueError, match="sample tasks"):
        net(x, Condition(sample_tasks=(0, 1)))


def test_one_hot_regions():
    target = torch.tensor([0, 1, 2, 2]).reshape(1, 1, 4, 1, 1)
    regions = one_hot_regions(target, 2)
    assert regions.shape == (1, 2, 4, 1, 1)
    assert regions[0, :, :, 0, 0].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]


@pytest.mark.integration
def test_the_trainer_mixes_tasks_of_one_channel_count_and_trains_each_on_its_own_channels(collection_workspace,
                                                                                         monkeypatch):
    """Built by nnU-Net's initialize on the synthetic collection: the CT tasks share batches, a mixed batch's step
    trains exactly the heads of the tasks in it."""
    from conftest import COLLECTION_ID, PLANS, trainer_maker
    trainer = trainer_maker("UniSegTrainerTaskHeadsMixedBatches", collection_workspace["env"], f"Dataset{COLLECTION_ID}_Synth",
                            PLANS, "3d_fullres", monkeypatch)()
    trainer.on_train_start()
    registry = trainer.registry
    for _ in range(60):
        batch = next(trainer.dataloader_train)
        tasks = sorted({registry.task_of_case(k) for k in batch["keys"]})
        assert len({registry.tasks[t].num_channels for t in tasks}) == 1
        if len(tasks) > 1:
            break
    else:
        raise AssertionError("no batch mixed tasks in 60 draws")
    trainer.on_train_epoch_start()
    network = trainer._plain_network()
    grads = {}
    handle = register_optimizer_step_pre_hook(
        lambda *_: grads.update(head=network.decoder.seg_layers[-1].weight.grad.flatten(1).abs().sum(1).clone()))
    try:
        trainer.train_step(batch)
    finally:
        handle.remove()
    trained = {t for t in range(len(registry))
               if grads["head"][network.head_offsets[t]:network.head_offsets[t] + network.head_sizes[t]].any()}
    assert trained == set(tasks)
    # under DDP ranks hold different tasks (different class counts): the Dice gathers nothing across ranks
    trainer.is_ddp = True
    assert trainer._build_loss().loss.loss.region_loss.dc.ddp is False
