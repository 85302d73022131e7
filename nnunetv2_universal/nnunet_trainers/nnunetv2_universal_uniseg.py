"""Re-exports for nnU-Net's trainer search (nnUNet_extTrainer points at this folder). No code lives here."""
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer  # noqa: F401
from nnunetv2_universal.training.variants.short_schedules import UniSegTrainer_cpuDemo, UniSegTrainer_test  # noqa: F401
