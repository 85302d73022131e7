"""nnU-Net's DDP wraps networks without find_unused_parameters: every parameter must take part in every training
step (with a zero gradient if the step does not use it: other tasks' heads, experts a sample is not routed to)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nnunetv2_universal.networks.hermes import HermesNetwork
from nnunetv2_universal.networks.m4oe import M4oEUNet
from nnunetv2_universal.networks.swin_unet_moe import SwinUNetMoE


def missing_grads(net: nn.Module):
    return [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]


def m4oe(**kw):
    return M4oEUNet(1, 4, [8, 16, 32, 32], nn.Conv3d, 3, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], 1, 3, 1,
                    num_tasks=3, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
                    deep_supervision=True, **kw)


@pytest.mark.parametrize("phase", ["segmentation", "masked image modelling"])
def test_m4oe_unet(phase):
    net = m4oe(with_reconstruction_head=True).train()
    x = torch.randn(2, 1, 16, 32, 32)
    if phase == "segmentation":
        out = net(x, condition=1)  # one task per batch: the other heads are not used
        out = sum(o.sum() for o in out) + net.reconstruct(x).sum() * 0
    else:
        net.route(torch.tensor([1, 1]))  # hard routing: expert 0 and the gates are not used
        out = net.reconstruct(x).sum()
    out.backward()
    assert missing_grads(net) == []


def test_swin_unet_moe():
    net = SwinUNetMoE(1, 4, 3, (64, 64), embed_dim=12, num_heads=(1, 2, 3, 4), window_size=2).train()
    net(torch.randn(1, 1, 64, 64), condition=2).sum().backward()
    assert missing_grads(net) == []


def test_hermes():
    net = HermesNetwork(1, 4, [8, 16, 32, 32], nn.Conv3d, 3, [1, 2, 2, 2], 1, 1, 1, num_global_tasks=5,
                        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
                        deep_supervision=True).train()
    out = net(torch.randn(1, 1, 16, 32, 32), task_ids=torch.tensor([[0, -1]]), modality_ids=torch.tensor([1]))
    (sum(o.sum() for o in out) + net.last_modality_logits.sum()).backward()
    assert missing_grads(net) == []


def test_echo(tmp_path):
    from echo_synthetic import echo_test_template
    from nnunetv2_universal.networks.echo_prompt import EchoPromptNetwork
    kwargs = json.load(open(echo_test_template(str(tmp_path))))["arch_kwargs"]
    kwargs.update(conv_op=nn.Conv3d, norm_op=nn.InstanceNorm3d, nonlin=nn.LeakyReLU, dropout_op=None)
    net = EchoPromptNetwork(input_channels=1, num_classes=2, **kwargs).train()
    net.class_embeddings.normal_()
    net.class_embeddings_ready.fill_(True)
    logits, aux = net.forward_with_aux(torch.randn(2, 1, 16, 32, 32), query=torch.randn(2, 16),
                                       views=torch.tensor([0, 2]))
    (logits.sum() + aux["scores"].sum() - aux["selection"].matching.sum()).backward()
    assert missing_grads(net) == []
