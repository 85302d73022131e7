"""M4oE variants: the released ablations (MoE in encoder only / decoder only / neither, gate switches, two experts)
on the paper's Swin-UNet (`M4oESwinTrainer...`, `-c 2d -p M4oESwinPlans`) and on the 3D U-Net extension
(`M4oETrainer...`), and short schedules for tests. Each switch is one mixin; `network_overrides` of a mixin combine
with the trainer's (UniSegTrainer.network_kwargs)."""
from __future__ import annotations


from nnunetv2_universal.training.m4oe_trainer import (M4oEPretrainTrainer, M4oESwinPretrainTrainer, M4oESwinTrainer,
                                                      M4oETrainer)
from nnunetv2_universal.training.variants.short_schedules import _NoMirroring, _ShortSchedule


class EncoderOnly:
    """M4oE MLPs in the encoder only (the released `_encoder_only`)."""
    network_overrides = {"moe_in": "encoder"}


class DecoderOnly:
    """M4oE MLPs in the decoder only (the released `_decoder_only`)."""
    network_overrides = {"moe_in": "decoder"}


class NoMoE:
    """Plain MLPs everywhere, per-dataset heads kept (the released `_wo_MoE`)."""
    network_overrides = {"moe_in": "none"}


class NoGate:
    """Experts averaged with equal weights (no gating network)."""
    network_overrides = {"gate_mode": "none"}


class CodeGate:
    """The released code's gate: channel softmax shared by all experts."""
    network_overrides = {"gate_mode": "code_compat"}


class TwoExperts:
    """Two experts, CT and MR (contrast-enhanced and plain MRI share one), instead of the paper's three."""
    expert_modalities = ("CT", "MR")
    network_overrides = {"num_experts": 2}


# the paper's network (2D Swin-UNet)
class M4oESwinTrainerEncoderOnly(EncoderOnly, M4oESwinTrainer):
    pass


class M4oESwinTrainerDecoderOnly(DecoderOnly, M4oESwinTrainer):
    pass


class M4oESwinTrainerNoMoE(NoMoE, M4oESwinTrainer):
    pass


class M4oESwinTrainerNoGate(NoGate, M4oESwinTrainer):
    pass


class M4oESwinTrainerCodeGate(CodeGate, M4oESwinTrainer):
    pass


class M4oESwinTrainerTwoExperts(TwoExperts, M4oESwinTrainer):
    pass


class M4oESwinPretrainTrainerTwoExperts(TwoExperts, M4oESwinPretrainTrainer):
    """Phase 1 for M4oESwinTrainerTwoExperts."""


# the extension: the same layers in nnU-Net's 3D U-Net
class M4oETrainerEncoderOnly(EncoderOnly, M4oETrainer):
    pass


class M4oETrainerDecoderOnly(DecoderOnly, M4oETrainer):
    pass


class M4oETrainerNoMoE(NoMoE, M4oETrainer):
    pass


class M4oETrainerNoGate(NoGate, M4oETrainer):
    pass


class M4oETrainerCodeGate(CodeGate, M4oETrainer):
    pass


class M4oETrainerTwoExperts(TwoExperts, M4oETrainer):
    pass


class M4oEPretrainTrainerTwoExperts(TwoExperts, M4oEPretrainTrainer):
    """Phase 1 for M4oETrainerTwoExperts."""


class M4oETrainer_test(_NoMirroring, _ShortSchedule, M4oETrainer):
    """Tests: two epochs, one batch per task each."""


class M4oEPretrainTrainer_test(_NoMirroring, _ShortSchedule, M4oEPretrainTrainer):
    """Tests: two epochs, one batch per task each."""


class M4oESwinTrainer_test(_NoMirroring, _ShortSchedule, M4oESwinTrainer):
    """Tests: two epochs, one batch per task each."""
