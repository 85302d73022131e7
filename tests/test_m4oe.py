"""M4oE parts: the MoE layer (gate forms, hard routing), per-dataset heads, adding a modality, masked image
modelling, parameter counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunetv2_universal.networks.m4oe import M4oEUNet, expand_for_new_modality, moe_parameter_summary
from nnunetv2_universal.networks.moe import MoEMLP
from nnunetv2_universal.training.m4oe_trainer import modality_family


def small_unet(**overrides) -> M4oEUNet:
    kwargs = dict(input_channels=1, n_stages=4, features_per_stage=[8, 16, 32, 32], conv_op=nn.Conv3d,
                  kernel_sizes=3, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=1,
                  num_classes=4, n_conv_per_stage_decoder=1, num_tasks=3, num_experts=2, norm_op=nn.InstanceNorm3d,
                  norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU, deep_supervision=True)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return M4oEUNet(**kwargs)


def test_paper_gate_weights_sum_to_one_per_token():
    torch.manual_seed(0)
    moe = MoEMLP(16, 3)
    x = torch.randn(2, 10, 16)
    g = moe.gate_weights(x)
    assert g.shape == (2, 10, 3) and torch.allclose(g.sum(-1), torch.ones(2, 10))
    expected = sum(g[..., e:e + 1] * moe.experts[e](x) for e in range(3))
    assert torch.allclose(moe(x), expected, atol=1e-6)


def test_code_compat_gate_and_zero_gate():
    torch.manual_seed(0)
    moe = MoEMLP(16, 3, gate_mode="code_compat")
    x = torch.randn(4, 16)
    w = torch.softmax(moe.channel_gate(x), -1)
    assert torch.allclose(moe(x), w * sum(e(x) for e in moe.experts), atol=1e-6)
    paper = MoEMLP(16, 3)
    paper.reset_gate()
    assert torch.allclose(paper(x), sum(e(x) for e in paper.experts) / 3, atol=1e-6)
    none = MoEMLP(16, 3, gate_mode="none")
    assert none.gate is None and torch.allclose(none(x), sum(e(x) for e in none.experts) / 3, atol=1e-6)
    with pytest.raises(ValueError, match="gate_mode"):
        MoEMLP(16, 3, gate_mode="topk")


def test_hard_routing_trains_only_the_routed_expert():
    torch.manual_seed(0)
    moe = MoEMLP(8, 3)
    moe.route(torch.tensor([1, 1]))
    out = moe(torch.randn(2, 5, 8))
    out.sum().backward()
    grads = [sum(p.grad.abs().sum() for p in e.parameters()) for e in moe.experts]
    assert grads[1] > 0 and grads[0] == 0 and grads[2] == 0  # zero (not None): DDP sees every parameter used
    assert not moe.gate.weight.grad.any()
    moe.route(torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="routing ids"):
        moe(torch.randn(2, 5, 8))


def test_network_routing_reaches_every_moe_layer():
    net = small_unet(with_reconstruction_head=True)
    assert len(net.moe_layers) == 3  # two deep encoder stages + one deep decoder stage
    net.route(torch.tensor([1, 1]))
    net.reconstruct(torch.randn(2, 1, 16, 32, 32)).sum().backward()
    for layer in net.moe_layers:
        assert not layer.experts[0][0].weight.grad.any() and layer.experts[1][0].weight.grad.any()
    with pytest.raises(ValueError, match="expert ids"):
        net.route(torch.tensor([2]))


def test_heads_selected_per_sample_in_a_mixed_batch():
    net = small_unet().eval()
    x = torch.randn(3, 1, 16, 32, 32)
    with torch.no_grad():
        mixed = net(x, tasks=torch.tensor([2, 0, 1]))
        alone = [net(x[i:i + 1], condition=t)[0] for i, t in enumerate((2, 0, 1))]
    assert [o.shape[0] for o in mixed] == [3, 3, 3]
    for i in range(3):
        assert torch.allclose(mixed[0][i], alone[i][0], atol=1e-5)
    assert not torch.allclose(mixed[0][0], net(x[:1], condition=0)[0][0])  # another head, another output
    with pytest.raises(ValueError, match="task ids"):
        net(x, tasks=torch.tensor([0, 3, 1]))


@pytest.mark.parametrize("moe_in,expected", [("encoder", 2), ("decoder", 1), ("both", 3), ("none", 0)])
def test_ablation_placements(moe_in, expected):
    assert len(small_unet(moe_in=moe_in).moe_layers) == expected


def test_adding_a_modality_keeps_trained_weights():
    net = small_unet()
    state = expand_for_new_modality(net.state_dict(), copy_from=1, new_tasks=1)
    bigger = small_unet(num_experts=3, num_tasks=4)
    bigger.load_state_dict(state)  # strict: every key present with the right shape
    for old, new in zip(net.moe_layers, bigger.moe_layers):
        assert torch.equal(new.experts[2][0].weight, old.experts[1][0].weight)
        assert torch.equal(new.experts[0][0].weight, old.experts[0][0].weight)
        assert torch.equal(new.gate.weight[2], old.gate.weight[1])
    assert torch.equal(bigger.dataset_heads[0][1].weight, net.dataset_heads[0][1].weight)
    assert not bigger.dataset_heads[0][3].weight.any()


def test_adding_a_modality_to_the_papers_swin_unet(tmp_path):
    """The command on a Swin-UNet checkpoint; nnU-Net's -pretrained_weights loader takes the output."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunetv2_universal.finetuning.m4oe_modality import main
    from nnunetv2_universal.networks.swin_unet_moe import SwinUNetMoE

    def swin(**kw):
        return SwinUNetMoE(1, 4, kw.pop("num_tasks", 3), (64, 64), embed_dim=12, num_heads=(1, 2, 3, 4),
                           window_size=2, **kw)
    torch.manual_seed(0)
    net = swin(num_experts=3)
    torch.save({"network_weights": net.state_dict(), "init_args": {}, "trainer_name": "M4oESwinTrainer"},
               tmp_path / "checkpoint_final.pth")
    main(["-i", str(tmp_path / "checkpoint_final.pth"), "-o", str(tmp_path / "grown.pth"), "--copy_expert", "0",
          "--new_tasks", "2", "--head_from", "1"])
    bigger = swin(num_experts=4, num_tasks=5)
    load_pretrained_weights(bigger, str(tmp_path / "grown.pth"))  # every key, in name and shape
    layers = [m for m in net.modules() if hasattr(m, "experts")]
    grown = [m for m in bigger.modules() if hasattr(m, "experts")]
    assert len(layers) == len(grown) > 0
    for old, new in zip(layers, grown):
        assert torch.equal(new.experts[3][0].weight, old.experts[0][0].weight)
        assert torch.equal(new.experts[2][0].weight, old.experts[2][0].weight)
        assert torch.equal(new.gate.weight[3], old.gate.weight[0])
    for task in (3, 4):
        assert torch.equal(bigger.dataset_heads[task].weight, net.dataset_heads[1].weight)
    with pytest.raises(ValueError, match="no expert 5"):
        expand_for_new_modality(net.state_dict(), copy_from=5)


def test_masked_image_modelling_loss_decreases():
    from nnunetv2_universal.training.m4oe_trainer import M4oEPretrainTrainer
    net = small_unet(with_reconstruction_head=True, deep_supervision=False)
    fake = type("T", (), {"mask_block": 16, "mask_ratio": 0.75, "device": torch.device("cpu")})()
    torch.manual_seed(1)
    yy = torch.linspace(-1, 1, 32)
    images = torch.stack([torch.exp(-((yy[None, :, None] - c) ** 2 + yy[None, None, :] ** 2) * 4).expand(16, 32, 32)
                          for c in (-0.3, 0.0, 0.3, 0.5)])[:, None]
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    net.route(torch.zeros(4, dtype=torch.long))
    losses = []
    for _ in range(25):
        mask = M4oEPretrainTrainer.block_mask(fake, images.shape)
        error = ((net.reconstruct(images, mask) - images) ** 2 * mask).sum() / mask.sum()
        optimizer.zero_grad()
        error.backward()
        optimizer.step()
        losses.append(float(error.detach()))
    assert abs(float(mask.mean()) - 0.75) < 0.01
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_parameter_summary_and_modality_families():
    summary = moe_parameter_summary(small_unet())
    assert summary["total"] == sum(p.numel() for p in small_unet().parameters())
    assert summary["single_expert_path"] == summary["total"] - summary["experts"] / 2 - summary["gates"]
    assert [modality_family(n) for n in ("CT", "MRI", "T1", "T2", "PET", "cineMRI", "US", "CE-MRI", "T1ce")] == \
        ["CT", "MRI", "MRI", "MRI", "PET", "MRI", "US", "CE-MRI", "CE-MRI"]
    assert [modality_family(n, ("CT", "MR")) for n in ("CE-MRI", "MRI", "CT")] == ["MR", "MR", "CT"]


def test_add_modality_command_output_loads_with_nnunet_pretrained_loader(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunetv2_universal.finetuning.m4oe_modality import main
    net = small_unet()
    torch.save({"network_weights": net.state_dict(), "init_args": {}, "trainer_name": "M4oETrainer"},
               tmp_path / "checkpoint_final.pth")
    main(["-i", str(tmp_path / "checkpoint_final.pth"), "-o", str(tmp_path / "grown.pth"), "--copy_expert", "0"])
    grown = small_unet(num_experts=3, num_tasks=4)
    load_pretrained_weights(grown, str(tmp_path / "grown.pth"))
    for old, new in zip(net.moe_layers, grown.moe_layers):
        assert torch.equal(new.experts[2][3].weight, old.experts[0][3].weight)
    assert torch.equal(grown.encoder.stages[1][0].convs[0].conv.weight, net.encoder.stages[1][0].convs[0].conv.weight)


def test_swin_unet_moe_sizes_match_the_reference():
    """Released-code configuration (3 experts, channel gate, 3-channel input, heads K = 14/3/16): 60.43 M; one
    expert path without gates: 27.17 M (the paper reports 27.31 M)."""
    from nnunetv2_universal.networks.swin_unet_moe import SwinUNetMoE
    net = SwinUNetMoE(3, 16, 3, (224, 224), num_experts=3, gate_mode="code_compat")
    summary = moe_parameter_summary(net)
    assert round(summary["total"] / 1e6, 2) == 60.43 and round(summary["experts"] / 1e6, 2) == 46.95
    assert round(summary["gates"] / 1e6, 2) == 1.96 and round(summary["single_expert_path"] / 1e6, 2) == 27.17
    # the plans template's defaults (3 experts, paper gate) on FLARE22 + AMOS-CT + AMOS-MR + ATLAS, 1 channel
    from nnunetv2_universal.collection.templates import M4OE_SWIN
    ours = SwinUNetMoE(1, 16, 4, (224, 224), stem_channels=[1], **M4OE_SWIN["arch_kwargs"])
    assert moe_parameter_summary(ours)["total"] == 58_486_734


def test_swin_unet_moe_forward_routing_and_heads():
    from nnunetv2_universal.networks.swin_unet_moe import SwinUNetMoE
    torch.manual_seed(0)
    net = SwinUNetMoE(1, 4, 2, (64, 64), embed_dim=12, num_heads=(1, 2, 3, 4), window_size=2,
                      with_reconstruction_head=True, drop_path_rate=0.0)  # no random block dropping
    x = torch.randn(2, 1, 64, 64)
    assert net(x, tasks=torch.tensor([0, 1])).shape == (2, 4, 64, 64)
    assert len(net.moe_layers) == 14  # every block: 8 encoder, 6 decoder (as the reference)
    net.route(torch.tensor([1, 1]))
    net.reconstruct(x).sum().backward()
    assert all(not m.experts[0][0].weight.grad.any() and m.experts[1][0].weight.grad.any() for m in net.moe_layers)
    with pytest.raises(ValueError, match="divisible"):
        SwinUNetMoE(1, 4, 2, (60, 60))


# ---------------------------------------------------------------- paper fidelity (issue 15)

def test_three_experts_from_the_registry_channel_names():
    """The paper's experts (Fig. 2): CT (FLARE22, AMOS-CT), CE-MRI (ATLAS) and MRI (AMOS-MR), read off the channel
    names the converters write into the registry; two experts only as a variant."""
    from nnunetv2_universal.dataset_conversion import amos22, atlas23, flare22
    from nnunetv2_universal.training.m4oe_trainer import M4oETrainer
    from nnunetv2_universal.training.variants.m4oe_variants import M4oETrainerTwoExperts
    assert M4oETrainer.expert_modalities == ("CT", "CE-MRI", "MRI")
    assert M4oETrainer.all_network_overrides()["num_experts"] == 3
    names = {"FLARE22": flare22.CHANNELS["0"], "AMOS-CT": amos22.CHANNELS["ct"]["0"],
             "AMOS-MR": amos22.CHANNELS["mr"]["0"], "ATLAS23": atlas23.CHANNELS["0"]}
    assert {k: modality_family(v) for k, v in names.items()} == {"FLARE22": "CT", "AMOS-CT": "CT", "AMOS-MR": "MRI",
                                                                 "ATLAS23": "CE-MRI"}
    two = M4oETrainerTwoExperts.expert_modalities
    assert {k: modality_family(v, two) for k, v in names.items()} == {"FLARE22": "CT", "AMOS-CT": "CT",
                                                                      "AMOS-MR": "MR", "ATLAS23": "MR"}


@pytest.mark.parametrize("variant", ["M4oETrainer", "M4oETrainerCodeGate", "M4oETrainerNoGate",
                                     "M4oETrainerEncoderOnly", "M4oETrainerDecoderOnly", "M4oETrainerNoMoE"])
def test_phase_one_weights_load_into_every_gate_variant(tmp_path, variant):
    """Phase 1 (M4oEPretrainTrainer's network) -> phase 2 of each variant through nnU-Net's own
    `-pretrained_weights` loader (nnunetv2.run.load_pretrained_weights): every key matches in name and shape."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2_universal.training.m4oe_trainer import M4oEPretrainTrainer
    from nnunetv2_universal.training.variants import m4oe_variants
    trainer = getattr(m4oe_variants, variant, None) or __import__(
        "nnunetv2_universal.training.m4oe_trainer", fromlist=[variant]).__dict__[variant]
    phase1 = small_unet(deep_supervision=False, **M4oEPretrainTrainer.all_network_overrides())
    torch.save({"network_weights": phase1.state_dict()}, tmp_path / "phase1.pth")
    phase2 = small_unet(**trainer.all_network_overrides())
    load_pretrained_weights(phase2, str(tmp_path / "phase1.pth"))
    loaded = phase2.state_dict()
    for key, value in phase1.state_dict().items():
        if key in loaded and "gate" not in key:
            assert torch.equal(loaded[key], value), key


def test_masked_pixels_are_replaced_by_a_learned_token():
    """Swin-MAE's masking: what lies under the 16-pixel masked blocks does not reach the network (CNN: a learned
    value per channel; Swin: the learned mask token replaces the patch tokens), and the token learns."""
    from nnunetv2_universal.networks.swin_unet_moe import SwinUNetMoE
    from nnunetv2_universal.training.m4oe_trainer import M4oEPretrainTrainer
    fake = type("T", (), {"mask_block": 16, "mask_ratio": 0.75, "device": torch.device("cpu")})()
    torch.manual_seed(0)
    swin = SwinUNetMoE(1, 4, 2, (64, 64), embed_dim=12, num_heads=(1, 2, 3, 4), window_size=2,
                       with_reconstruction_head=True, drop_path_rate=0.0).eval()
    cnn = small_unet(with_reconstruction_head=True, deep_supervision=False).eval()
    for net, shape in ((swin, (2, 1, 64, 64)), (cnn, (2, 1, 16, 32, 32))):
        x = torch.randn(shape)
        mask = M4oEPretrainTrainer.block_mask(fake, shape)
        assert abs(float(mask.mean()) - 0.75) < 0.07
        changed = x + 5 * torch.randn(shape) * mask  # different content under the mask only
        torch.testing.assert_close(net.reconstruct(x, mask), net.reconstruct(changed, mask))
        net.reconstruct(x, mask).square().mean().backward()
        assert net.mask_token.grad.abs().sum() > 0


def _small_swin(**overrides):
    from nnunetv2_universal.networks.swin_unet_moe import SwinUNetMoE
    kwargs = dict(embed_dim=12, num_heads=(1, 2, 3, 4), window_size=2, **overrides)
    return SwinUNetMoE(1, 4, 2, (64, 64), **kwargs)


@pytest.mark.parametrize("variant, encoder_moe, decoder_moe, experts, gate", [
    ("M4oESwinTrainer", True, True, 3, "paper"),
    ("M4oESwinTrainerEncoderOnly", True, False, 3, "paper"),
    ("M4oESwinTrainerDecoderOnly", False, True, 3, "paper"),
    ("M4oESwinTrainerNoMoE", False, False, None, None),
    ("M4oESwinTrainerNoGate", True, True, 3, "none"),
    ("M4oESwinTrainerCodeGate", True, True, 3, "code_compat"),
    ("M4oESwinTrainerTwoExperts", True, True, 2, "paper"),
])
def test_the_released_ablations_switch_the_swin_unet(variant, encoder_moe, decoder_moe, experts, gate):
    """The ablations are on the paper's network (the released `_encoder_only`, `_decoder_only`, `_wo_MoE` and the
    gate switches), not only on the 3D extension."""
    from nnunetv2_universal.networks.moe import MoEMLP
    from nnunetv2_universal.nnunet_trainers import nnunetv2_universal_uniseg as trainers
    net = _small_swin(**getattr(trainers, variant).all_network_overrides())
    has_moe = [[isinstance(block.mlp, MoEMLP) for stage in stages for block in stage]
               for stages in (net.encoder_stages, net.decoder_stages)]
    assert (all(has_moe[0]), any(has_moe[0]), all(has_moe[1]), any(has_moe[1])) == \
        (encoder_moe, encoder_moe, decoder_moe, decoder_moe)
    layers = net.moe_layers
    assert {(m.num_experts, m.gate_mode) for m in layers} == ({(experts, gate)} if layers else set())


@pytest.mark.parametrize("variant", ["M4oESwinTrainer", "M4oESwinTrainerNoGate", "M4oESwinTrainerCodeGate"])
def test_swin_phase_one_weights_load_into_the_gate_variants(tmp_path, variant):
    """Swin phase 1 -> phase 2 with nnU-Net's `-pretrained_weights` loader. (EncoderOnly, DecoderOnly and NoMoE have
    plain MLPs where phase 1 trains experts: they train from scratch, as the how-to says.)"""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2_universal.nnunet_trainers import nnunetv2_universal_uniseg as trainers
    phase1 = _small_swin(**trainers.M4oESwinPretrainTrainer.all_network_overrides())
    torch.save({"network_weights": phase1.state_dict()}, tmp_path / "phase1.pth")
    phase2 = _small_swin(**getattr(trainers, variant).all_network_overrides())
    load_pretrained_weights(phase2, str(tmp_path / "phase1.pth"))
    loaded = phase2.state_dict()
    assert any("experts" in k for k in loaded)
    for key, value in phase1.state_dict().items():
        if key in loaded and "gate" not in key:
            assert torch.equal(loaded[key], value), key
