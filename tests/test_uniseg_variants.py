"""The paper's ablation variants: each trains a few iterations on the test collection and predicts."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json

from conftest import PLANS
from nnunetv2_universal.inference.predictor import UniversalPredictor
from nnunetv2_universal.training.variants.uniseg_ablations import (
    DoDNetTrainer, UniSegTrainerConditionLR, UniSegTrainerDecoderFiLM, UniSegTrainerFixedPrompt,
    UniSegTrainerLowestHead, UniSegTrainerMultiplePrompts, UniSegTrainerPromptGain, UniSegTrainerUniSegT)
from nnunetv2_universal.training.task_heads_trainer import UniSegTrainerTaskHeads

pytestmark = pytest.mark.integration


def _short(variant):
    class Short(variant):
        batches_per_task_per_epoch = 1

        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = 1
            self.num_val_iterations_per_epoch = 1
    Short.__name__ = f"{variant.__name__}_short"
    return Short


@pytest.mark.parametrize("variant", [UniSegTrainerFixedPrompt, UniSegTrainerMultiplePrompts, UniSegTrainerUniSegT,
                                     DoDNetTrainer, UniSegTrainerDecoderFiLM, UniSegTrainerPromptGain,
                                     UniSegTrainerConditionLR, UniSegTrainerLowestHead, UniSegTrainerTaskHeads])
def test_variant_trains_and_predicts(variant, collection_workspace, monkeypatch):
    env = collection_workspace["env"]
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    pre = join(env["nnUNet_preprocessed"], "Dataset900_Synth")
    plans, dataset_json = load_json(join(pre, f"{PLANS}.json")), load_json(join(pre, "dataset.json"))
    trainer = _short(variant)(dict(plans, continue_training=False), "3d_fullres", 0, dataset_json,
                              torch.device("cpu"))
    trainer.run_training()
    assert os.path.isfile(join(trainer.output_folder, "checkpoint_final.pth"))
    assert len(trainer.logger.get_value("train_losses", None)) == 1
    network = trainer.network
    if variant is UniSegTrainerFixedPrompt:
        assert "prompt" not in dict(network.named_parameters()) and not network.prompt.any()
    if variant is UniSegTrainerMultiplePrompts:
        assert network.fuse is None
    if variant is UniSegTrainerDecoderFiLM:
        assert network.film is not None and any(p.abs().sum() > 0 for p in network.film.parameters())  # trained
    if variant is UniSegTrainerPromptGain:
        assert network.prompt_gain == pytest.approx(np.sqrt(network.encoder.output_channels[-1]))
    if variant is UniSegTrainerConditionLR:  # prompt and FUSE at 10x the learning rate of the rest
        assert [g["lr"] / trainer.optimizer.param_groups[0]["lr"] for g in trainer.optimizer.param_groups] == \
            pytest.approx([1.0, 10.0])
    if variant is UniSegTrainerLowestHead:
        weights = trainer.loss.loss.weight_factors
        assert weights[-1] > 0 and sum(weights) == pytest.approx(1.0)

    if variant is UniSegTrainerTaskHeads:  # one sigmoid channel per (task, foreground class), no prompt
        assert network.decoder.seg_layers[-1].out_channels == sum(t.num_classes - 1 for t in trainer.registry)
        assert not hasattr(network, "prompt")

    trainer.set_deep_supervision_enabled(False)
    predictor = UniversalPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager, None,
                                    dataset_json, variant.__name__, None)
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    ds = nnUNetDatasetBlosc2(join(pre, f"{PLANS}_3d_fullres"))
    case = next(k for k in ds.identifiers if k.startswith("SynthLiverCT"))
    data = torch.from_numpy(ds.load_case(case)[0][:])
    logits = {}
    for task, n in (("SynthLiverCT", 3), ("SynthKidneyCT", 2)):
        predictor.select_task(task)
        logits[task] = predictor.predict_sliding_window_return_logits(data)
        assert logits[task].shape == (n, *data.shape[1:]) and torch.isfinite(logits[task]).all()
    # the task changes the output (for every variant the condition reaches the network)
    assert not np.allclose(logits["SynthLiverCT"][:2].numpy(), logits["SynthKidneyCT"].numpy())
