"""M4oE variants: the paper's Table 4 ablations (MoE in encoder only / decoder only / both, with and without the
gate), the released code's gate, and short schedules for tests. Same collection and plans as UniSegTrainer."""
from __future__ import annotations


from nnunetv2_universal.training.m4oe_trainer import M4oEPretrainTrainer, M4oESwinTrainer, M4oETrainer
from nnunetv2_universal.training.variants.short_schedules import _NoMirroring, _ShortSchedule


class M4oETrainerEncoderOnly(M4oETrainer):
    network_overrides = {**M4oETrainer.network_overrides, "moe_in": "encoder"}


class M4oETrainerDecoderOnly(M4oETrainer):
    network_overrides = {**M4oETrainer.network_overrides, "moe_in": "decoder"}


class M4oETrainerNoGate(M4oETrainer):
    """Experts averaged with equal weights (no gating network)."""
    network_overrides = {**M4oETrainer.network_overrides, "gate_mode": "none"}


class M4oETrainerNoMoE(M4oETrainer):
    """Plain U-Net with per-dataset heads (no experts)."""
    network_overrides = {**M4oETrainer.network_overrides, "moe_in": "none"}


class M4oETrainerCodeGate(M4oETrainer):
    """The released code's gate: channel softmax shared by all experts."""
    network_overrides = {**M4oETrainer.network_overrides, "gate_mode": "code_compat"}


class M4oETrainerTwoExperts(M4oETrainer):
    """Two experts, CT and MR (contrast-enhanced and plain MRI share one), instead of the paper's three."""
    expert_modalities = ("CT", "MR")
    network_overrides = {**M4oETrainer.network_overrides, "num_experts": 2}


class M4oEPretrainTrainerTwoExperts(M4oEPretrainTrainer):
    """Phase 1 for M4oETrainerTwoExperts."""
    expert_modalities = ("CT", "MR")
    network_overrides = {**M4oEPretrainTrainer.network_overrides, "num_experts": 2}


class M4oETrainer_test(_NoMirroring, _ShortSchedule, M4oETrainer):
    """Tests: two epochs, one batch per task each."""


class M4oEPretrainTrainer_test(_NoMirroring, _ShortSchedule, M4oEPretrainTrainer):
    """Tests: two epochs, one batch per task each."""


class M4oESwinTrainer_test(_NoMirroring, _ShortSchedule, M4oESwinTrainer):
    """Tests: two epochs, one batch per task each."""
