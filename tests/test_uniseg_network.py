"""Unit tests of UniSegNetwork: the paper's parameter count, output shapes, task conditioning, stem dispatch,
prompt/patch coupling, multi-task decoding and task-sliced gradients (tiny configs for every forward pass)."""
from __future__ import annotations

import copy
import pydoc

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn

from nnunetv2_universal.collection.templates import PAPER
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.networks.blocks import UnsupportedChannelCountError
from nnunetv2_universal.networks.uniseg import UniSegNetwork
from nnunetv2_universal.training.uniseg_trainer import TaskSlicedLoss

torch.set_num_threads(1)

TINY_PATCH = [16, 32, 32]
TINY_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _paper_kwargs(**overrides) -> dict:
    kw = copy.deepcopy(PAPER["arch_kwargs"])
    for key in PAPER["_kw_requires_import"]:
        if kw[key] is not None:
            kw[key] = pydoc.locate(kw[key])
            assert kw[key] is not None, key
    kw.update(input_channels=1, num_classes=4, num_tasks=11, patch_size=[64, 192, 192], stem_channels=[1, 2, 4],
              deep_supervision=True)
    kw.update(overrides)
    return kw


def _tiny(**overrides) -> UniSegNetwork:
    kw = dict(input_channels=1, n_stages=4, features_per_stage=[4, 8, 16, 16], conv_op=nn.Conv3d,
              kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3, strides=TINY_STRIDES, n_conv_per_stage=2,
              n_conv_per_stage_decoder=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
              norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
              num_classes=4, num_tasks=3, patch_size=TINY_PATCH, stem_channels=[1, 2, 4], deep_supervision=True)
    kw.update(overrides)
    torch.manual_seed(0)
    return UniSegNetwork(**kw)


def _image(channels: int = 1, batch: int = 2, size=TINY_PATCH, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *size, generator=g)


# ---------------------------------------------------------------- paper configuration (no forward pass)

@pytest.fixture(scope="module")
def paper_net():
    torch.manual_seed(0)
    return UniSegNetwork(**_paper_kwargs())


def test_paper_total_parameter_count(paper_net):
    assert _n_params(paper_net) == 32_114_381


def test_paper_part_parameter_counts(paper_net):
    assert _n_params(paper_net.fuse) == 939_261
    assert tuple(paper_net.prompt.shape) == (1, 11, 4, 6, 6)
    assert isinstance(paper_net.prompt, nn.Parameter)
    assert _n_params(paper_net.encoder) == 14_007_904
    assert sum(_n_params(t) for t in paper_net.decoder.transpconvs) == 1_812_992
    # the reference's decoder details: no bias on transposed convs and heads
    assert all(t.bias is None for t in paper_net.decoder.transpconvs)
    assert all(s.bias is None for s in paper_net.decoder.seg_layers)
    # the stems of the paper: one per channel count 1, 2, 4
    assert paper_net.stem.channel_counts == (1, 2, 4)
    assert [getattr(paper_net.stem, f"conv_{c}").in_channels for c in (1, 2, 4)] == [1, 2, 4]


def test_paper_v2_style_decoder_parameter_count():
    net = UniSegNetwork(**_paper_kwargs(decoder_kernel_sizes=None, transpconv_bias=True, seg_bias=True))
    assert _n_params(net) == 32_059_905


# ---------------------------------------------------------------- tiny configuration: shapes

def _expected_ds_shapes(batch: int, num_classes: int):
    shapes, size = [], list(TINY_PATCH)
    for stride in TINY_STRIDES[:-1]:  # one output per decoder stage, at the resolution of each skip
        size = [s // st for s, st in zip(size, stride)]
        shapes.append((batch, num_classes, *size))
    return shapes


def test_deep_supervision_output_shapes():
    net = _tiny()
    out = net(_image(batch=2), 0)
    assert isinstance(out, list) and len(out) == 4 - 1
    expected = _expected_ds_shapes(2, 4)
    assert expected == [(2, 4, 16, 32, 32), (2, 4, 16, 16, 16), (2, 4, 8, 8, 8)]
    assert [tuple(o.shape) for o in out] == expected
    assert all(torch.isfinite(o).all() for o in out)


def test_output_shape_without_deep_supervision():
    net = _tiny()
    net.decoder.deep_supervision = False
    out = net(_image(batch=2), 1)
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == (2, 4, 16, 32, 32)

    net2 = _tiny(deep_supervision=False)
    out2 = net2(_image(batch=1), 2)
    assert isinstance(out2, torch.Tensor) and tuple(out2.shape) == (1, 4, 16, 32, 32)


# ---------------------------------------------------------------- conditioning

def test_different_tasks_give_different_outputs():
    net = _tiny(deep_supervision=False).eval()
    x = _image(batch=1)
    with torch.no_grad():
        out0, out1 = net(x, 0), net(x, 1)
        again0 = net(x, 0)
        via_condition = net(x, Condition(task=1))
        net.condition = Condition(task=1)
        via_attribute = net(x)
        net.condition = Condition(task=0)
        via_attribute0 = net(x)
    assert out0.shape == out1.shape == (1, 4, 16, 32, 32)
    assert not torch.allclose(out0, out1)
    assert (out0 - out1).abs().max() > 1e-4
    assert torch.equal(out0, again0)  # deterministic in eval mode
    assert torch.allclose(via_condition, out1)
    assert torch.allclose(via_attribute, out1)
    assert torch.allclose(via_attribute0, out0)


def test_explicit_condition_overrides_attribute_and_conditioned_context_restores():
    net = _tiny(deep_supervision=False).eval()
    x = _image(batch=1)
    with torch.no_grad():
        ref2 = net(x, 2)
        net.condition = Condition(task=0)
        assert torch.allclose(net(x, 2), ref2)
        with net.conditioned(2):
            assert net.condition == Condition(task=2)
            assert torch.allclose(net(x), ref2)
    assert net.condition == Condition(task=0)


def test_missing_condition_raises():
    net = _tiny(deep_supervision=False).eval()
    assert net.condition is None
    with pytest.raises(ValueError, match="condition"):
        net(_image(batch=1))


def test_task_out_of_range_and_task_none_raise():
    net = _tiny(deep_supervision=False).eval()
    with pytest.raises(ValueError, match="out of range"):
        net(_image(batch=1), 3)
    with pytest.raises(ValueError, match="out of range"):
        net(_image(batch=1), -1)
    with pytest.raises(ValueError, match="condition.task"):
        net(_image(batch=1), Condition(modality=(0,)))
    with pytest.raises(TypeError):
        net(_image(batch=1), "task0")


# ---------------------------------------------------------------- multi-channel stem

def test_stem_dispatch_by_channel_count():
    net = _tiny(deep_supervision=False).eval()
    with torch.no_grad():
        outs = {c: net(_image(channels=c, batch=1), 0) for c in (1, 2, 4)}
    for c, o in outs.items():
        assert tuple(o.shape) == (1, 4, 16, 32, 32), c
        assert torch.isfinite(o).all()


def test_stem_gradient_goes_only_to_the_used_stem_in_training():
    net = _tiny(deep_supervision=False).train()
    out = net(_image(channels=2, batch=2), 0)
    out.sum().backward()
    stem = net.stem
    assert stem.conv_2.weight.grad is not None and stem.conv_2.weight.grad.abs().sum() > 0
    for c in (1, 4):
        conv = getattr(stem, f"conv_{c}")
        for p in conv.parameters():
            # touched with weight 0 (for DDP): the gradient exists and is exactly zero
            assert p.grad is not None
            assert torch.count_nonzero(p.grad) == 0


def test_stem_unused_convs_untouched_in_eval_mode():
    net = _tiny(deep_supervision=False).eval()
    out = net(_image(channels=2, batch=1), 0)
    out.sum().backward()
    assert net.stem.conv_2.weight.grad.abs().sum() > 0
    for c in (1, 4):
        g = getattr(net.stem, f"conv_{c}").weight.grad
        assert g is None or torch.count_nonzero(g) == 0


def test_unsupported_channel_count_raises():
    net = _tiny(deep_supervision=False).eval()
    with pytest.raises(UnsupportedChannelCountError) as info:
        net(_image(channels=3, batch=1), 0)
    assert "[1, 2, 4]" in str(info.value)
    assert "3 channel" in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- prompt / patch size

def test_wrong_patch_size_raises_mentioning_prompt():
    net = _tiny(deep_supervision=False).eval()
    assert tuple(net.prompt.shape) == (1, 3, 4, 4, 4)  # 16x32x32 / total stride 4x8x8
    with pytest.raises(ValueError, match="prompt"):
        net(_image(batch=1, size=[16, 64, 64]), 0)


def test_patch_not_divisible_by_total_stride_raises():
    with pytest.raises(ValueError, match="divisible"):
        _tiny(patch_size=[16, 30, 32])


# ---------------------------------------------------------------- forward_tasks

def test_forward_tasks_equals_separate_forwards():
    net = _tiny(deep_supervision=False).eval()
    x = _image(batch=2)
    with torch.no_grad():
        multi = net.forward_tasks(x, [0, 2])
        single = [net(x, 0), net(x, 2)]
    assert len(multi) == 2
    for m, s in zip(multi, single):
        assert m.shape == s.shape == (2, 4, 16, 32, 32)
        assert torch.allclose(m, s, atol=1e-6)
    assert not torch.allclose(multi[0], multi[1])


def test_forward_tasks_with_deep_supervision_returns_lists():
    net = _tiny().eval()
    with torch.no_grad():
        multi = net.forward_tasks(_image(batch=1), [Condition(task=1), 1])
    assert len(multi) == 2
    for out in multi:
        assert [tuple(o.shape) for o in out] == _expected_ds_shapes(1, 4)
    for a, b in zip(*multi):
        assert torch.allclose(a, b)


# ---------------------------------------------------------------- task-sliced loss gradients

def _dc_ce():
    return DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)


def test_task_sliced_loss_gives_no_gradient_to_hidden_channels():
    net = _tiny(deep_supervision=False).train()
    loss = TaskSlicedLoss(_dc_ce())
    loss.num_classes = 2
    x = _image(batch=2)
    target = (torch.rand(2, 1, *TINY_PATCH, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    logits = net(x, 0)
    logits.retain_grad()
    value = loss(logits, target)
    assert torch.isfinite(value)
    value.backward()
    grad = logits.grad
    assert grad is not None and grad.shape == (2, 4, 16, 32, 32)
    assert torch.count_nonzero(grad[:, 2:]) == 0
    assert torch.count_nonzero(grad[:, :2]) > 0
    seg = net.decoder.seg_layers[-1]
    assert torch.count_nonzero(seg.weight.grad[2:]) == 0
    assert torch.count_nonzero(seg.weight.grad[:2]) > 0
    assert torch.count_nonzero(seg.bias.grad[2:]) == 0
    assert torch.count_nonzero(seg.bias.grad[:2]) > 0


def test_task_sliced_loss_on_deep_supervision_list():
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    net = _tiny().train()
    loss = TaskSlicedLoss(DeepSupervisionWrapper(_dc_ce(), [1.0, 0.5, 0.25]))
    loss.num_classes = 3
    outs = net(_image(batch=2), 1)
    for o in outs:
        o.retain_grad()
    targets = [torch.randint(0, 3, (2, 1, *o.shape[2:]), generator=torch.Generator().manual_seed(i)).float()
               for i, o in enumerate(outs)]
    loss(outs, targets).backward()
    for o in outs:
        assert torch.count_nonzero(o.grad[:, 3:]) == 0
        assert torch.count_nonzero(o.grad[:, :3]) > 0
    for layer in net.decoder.seg_layers:
        assert torch.count_nonzero(layer.weight.grad[3:]) == 0
        assert torch.count_nonzero(layer.weight.grad[:3]) > 0


def test_task_sliced_loss_requires_num_classes():
    loss = TaskSlicedLoss(_dc_ce())
    with pytest.raises(RuntimeError, match="num_classes"):
        loss(torch.zeros(1, 4, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2))


def test_task_sliced_loss_value_equals_loss_on_sliced_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 4, 4)
    target = torch.randint(0, 2, (2, 1, 4, 4, 4)).float()
    sliced = TaskSlicedLoss(_dc_ce())
    sliced.num_classes = 2
    assert torch.allclose(sliced(logits, target), _dc_ce()(logits[:, :2], target))


# ---------------------------------------------------------------- VRAM estimate

def test_compute_conv_feature_map_size_positive_int():
    net = _tiny()
    size = net.compute_conv_feature_map_size([16, 32, 32])
    assert isinstance(size, (int, np.integer))
    assert int(size) > 0
    # larger input, larger estimate; the prompt term is included
    assert int(net.compute_conv_feature_map_size([32, 64, 64])) > int(size)
    assert int(size) > 3 * int(np.prod(net.prompt.shape[1:]))


def test_decoder_film_starts_as_the_paper_network_and_its_gradient_is_per_task():
    """The opt-in FiLM is zero-initialised (same outputs as the paper's network with the same weights) and only the
    batch's task row of its tables receives gradient."""
    torch.manual_seed(0)
    paper = _tiny(deep_supervision=True)
    film = _tiny(deep_supervision=True, decoder_film=True)
    missing, unexpected = film.load_state_dict(paper.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("film.") for k in missing) and missing
    x = _image()
    for a, b in zip(paper(x, 1), film(x, 1)):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in film(x, 2)).backward()
    for table in list(film.film.scale) + list(film.film.shift):
        rows = table.grad.abs().sum(1)
        assert rows[2] > 0 and rows[[0, 1]].sum() == 0


def test_prompt_gain_scales_only_the_prompt_channel():
    torch.manual_seed(0)
    paper = _tiny(deep_supervision=False)
    gained = _tiny(deep_supervision=False, prompt_gain="auto")
    gained.load_state_dict(paper.state_dict())
    assert gained.prompt_gain == pytest.approx(np.sqrt(paper.encoder.output_channels[-1]))
    x = _image()
    assert not torch.allclose(paper(x, 0), gained(x, 0))
    with torch.no_grad():  # the same as scaling the first transposed conv's prompt input weights
        paper.decoder.transpconvs[0].weight[-1] *= float(np.sqrt(paper.encoder.output_channels[-1]))
    torch.testing.assert_close(paper(x, 0), gained(x, 0))


def test_dodnet_every_deep_supervision_head_is_task_conditioned():
    """DoDNet baseline: no static heads; the generated head runs at every level, so each level's output changes
    with the task (tasks sharing output channels never train one head with contradictory targets)."""
    from nnunetv2_universal.networks.dodnet import DoDNetNetwork
    kw = dict(input_channels=1, n_stages=4, features_per_stage=[4, 8, 16, 16], conv_op=nn.Conv3d,
              kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3, strides=TINY_STRIDES, n_conv_per_stage=2,
              n_conv_per_stage_decoder=2, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
              nonlin=nn.LeakyReLU, num_classes=4, num_tasks=3, stem_channels=[1], deep_supervision=True)
    torch.manual_seed(0)
    net = DoDNetNetwork(**kw)
    assert len(net.decoder.seg_layers) == 0
    x = _image()
    with torch.no_grad():
        a, b = net(x, 0), net(x, 1)
    assert [o.shape for o in a] == [o.shape for o in b] and len(a) == 3
    for level_a, level_b in zip(a, b):
        assert not torch.allclose(level_a, level_b)


def test_a_step_on_one_channel_batches_leaves_the_other_stems_bit_identical():
    """Stems of channel counts absent from a step get zero gradients (DDP needs every parameter used); with
    momentum and weight decay they would still move. The trainers' optimiser hooks keep them exactly still."""
    from nnunetv2_universal.training.idle_parameters import IdleParametersStayStill
    net = _tiny().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    IdleParametersStayStill(optimizer)
    stem = next(m for m in net.modules() if type(m).__name__ == "MultiChannelStem")

    def step(channels):
        optimizer.zero_grad(set_to_none=True)
        out = net(_image(channels), 0)
        sum(o.mean() for o in out).backward()
        optimizer.step()

    step(2)  # the 2-channel stem now has momentum
    before = {c: [p.detach().clone() for p in stem.conv_for(c).parameters()] for c in (1, 2, 4)}
    for _ in range(3):
        step(1)
    for c in (2, 4):
        assert all(torch.equal(a, b) for a, b in zip(before[c], stem.conv_for(c).parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before[1], stem.conv_for(1).parameters()))
