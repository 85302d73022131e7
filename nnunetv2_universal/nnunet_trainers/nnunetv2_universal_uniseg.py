"""Re-exports for nnU-Net's trainer search (nnUNet_extTrainer points at this folder). No code lives here."""
from nnunetv2_universal.training.uniseg_trainer import UniSegTrainer  # noqa: F401
from nnunetv2_universal.training.finetune_trainer import UniSegFinetuneTrainer  # noqa: F401
from nnunetv2_universal.training.variants.short_schedules import (  # noqa: F401
    UniSegFinetuneTrainer_test, UniSegTrainer_cpuDemo, UniSegTrainer_test, UniSegTrainerDecoderFiLM_cpuDemo,
    UniSegTrainerTaskHeads_cpuDemo)
from nnunetv2_universal.training.task_heads_trainer import (  # noqa: F401
    UniSegTrainerTaskHeads, UniSegTrainerTaskHeadsMixedBatches)
from nnunetv2_universal.training.variants.uniseg_ablations import (  # noqa: F401
    DoDNetTrainer, UniSegTrainerConditionLR, UniSegTrainerDecoderFiLM, UniSegTrainerFixedPrompt,
    UniSegTrainerLowestHead, UniSegTrainerPromptGain,
    UniSegTrainerMultiplePrompts, UniSegTrainerUniSegT)
from nnunetv2_universal.training.echo_trainer import EchoPromptTrainer  # noqa: F401
from nnunetv2_universal.training.variants.echo_variants import (  # noqa: F401
    EchoPromptTrainer_cpuBench, EchoPromptTrainer_test, EchoPromptTrainer250Iterations, EchoPromptTrainerBCEDice,
    EchoPromptTrainerFullResScores, EchoPromptTrainerNnUNetAugmentation, EchoPromptTrainerNoText,
    EchoPromptTrainerOneHot, EchoPromptTrainerOneHot_cpuBench, EchoPromptTrainerPaperLoss, EchoPromptTrainerRawText,
    EchoPromptTrainerRawText_cpuBench, EchoPromptTrainerViewGiven)
from nnunetv2_universal.training.m4oe_trainer import (  # noqa: F401
    M4oEPretrainTrainer, M4oESwinPretrainTrainer, M4oESwinTrainer, M4oESwinTrainerReleasedCode, M4oETrainer)
from nnunetv2_universal.training.variants.m4oe_variants import (  # noqa: F401
    M4oEPretrainTrainer_test, M4oEPretrainTrainerTwoExperts, M4oESwinPretrainTrainerTwoExperts,
    M4oESwinTrainer_test, M4oESwinTrainerCodeGate, M4oESwinTrainerDecoderOnly, M4oESwinTrainerEncoderOnly,
    M4oESwinTrainerNoGate, M4oESwinTrainerNoMoE, M4oESwinTrainerTwoExperts, M4oETrainer_test, M4oETrainerCodeGate,
    M4oETrainerDecoderOnly, M4oETrainerEncoderOnly, M4oETrainerNoGate, M4oETrainerNoMoE, M4oETrainerTwoExperts)
from nnunetv2_universal.training.hermes_trainer import HermesTrainer  # noqa: F401
from nnunetv2_universal.training.variants.hermes_variants import (  # noqa: F401
    HermesTrainer_test, HermesTrainerAdamW, HermesTrainerNewTasksOnly, HermesTrainerNoDeepSupervision,
    HermesTrainerNoEMA, HermesTrainerUniformSampling, HermesTrainerUnmaskedNull)
