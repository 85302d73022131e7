"""Parameters a training step did not use stay exactly still, in every trainer and under every optimiser used here.

A batch holds one task, so other tasks' heads and rows, unrouted experts and absent stems get exact zero gradients
(DDP needs every parameter in every step). Momentum, weight decay and Adam-style moments would move them anyway;
`training/idle_parameters.py` keeps them as they are. Each check also runs without the hooks and shows the drift
it prevents."""
from __future__ import annotations

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from madgrad import MADGRAD
from timm.optim import Lamb
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nnunetv2_universal.training.idle_parameters import IdleParametersStayStill

OPTIMISERS = {
    "SGD (nnU-Net, UniSeg, M4oE 3D)": lambda p: torch.optim.SGD(p, 0.01, momentum=0.99, nesterov=True,
                                                               weight_decay=3e-5),
    "AdamW (M4oE Swin, phase 1)": lambda p: torch.optim.AdamW(p, 1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    "LAMB (Hermes)": lambda p: Lamb(p, 2e-3, betas=(0.9, 0.999), eps=1e-5, weight_decay=1e-5),
    "MADGRAD (echo)": lambda p: MADGRAD(p, 1e-4, momentum=0.9, weight_decay=3e-5),
}


class TwoTaskModel(nn.Module):
    """A shared layer, one head per task (whole tensors idle) and a task table (rows idle)."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.heads = nn.ModuleList(nn.Linear(4, 2) for _ in range(2))
        self.task_rows = nn.Parameter(torch.randn(2, 4))

    def forward(self, x, task):
        out = self.heads[task](self.shared(x) + self.task_rows[task])
        # every parameter takes part (as DDP requires): the other head with weight 0
        return out + sum(p.sum() for p in self.heads[1 - task].parameters()) * 0.0


def _step(model, optimizer, task):
    optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(task)
    model(torch.randn(3, 4), task).square().mean().backward()
    optimizer.step()


@pytest.mark.parametrize("hooks", [True, False], ids=["with the hooks", "without"])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_a_task_that_is_not_in_the_batch_keeps_its_head_and_rows(name, hooks):
    torch.manual_seed(0)
    model = TwoTaskModel()
    optimizer = OPTIMISERS[name](model.parameters())
    if hooks:
        IdleParametersStayStill(optimizer)
    _step(model, optimizer, 0)  # task 0's head and row now carry momentum / moments
    head0 = [p.detach().clone() for p in model.heads[0].parameters()]
    row0, row1 = model.task_rows[0].detach().clone(), model.task_rows[1].detach().clone()
    for _ in range(3):
        _step(model, optimizer, 1)
    still = all(torch.equal(a, b) for a, b in zip(head0, model.heads[0].parameters())) and \
        torch.equal(row0, model.task_rows[0])
    assert still == hooks
    assert not torch.equal(row1, model.task_rows[1])  # the used row trains


def test_every_plugin_trainer_installs_the_hooks():
    """Every trainer nnU-Net can find in the plugin (variants and test schedules included) gets the hooks from the
    shared defaults at initialize(); the checks below exercise each method's network and optimiser."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_universal.nnunet_trainers import nnunetv2_universal_uniseg as trainers
    from nnunetv2_universal.training.trainer_defaults import PluginTrainerDefaults
    found = [c for c in vars(trainers).values() if isinstance(c, type) and issubclass(c, nnUNetTrainer)]
    assert len(found) > 50
    assert [c.__name__ for c in found
            if not (issubclass(c, PluginTrainerDefaults) and c.idle_parameters_stay_still)] == []


# ---- every trainer, built by nnU-Net's initialize from the test collection's plans, on real batches


def _batches_of(trainer, condition_of_batch, first, second):
    """A batch whose condition is `first`, then one whose condition is `second`, from the trainer's own loader."""
    found = {}
    for _ in range(60):
        batch = next(trainer.dataloader_train)
        found.setdefault(condition_of_batch(trainer, batch["keys"]), batch)
        if first in found and second in found:
            return found[first], found[second]
    raise AssertionError(f"no batches of {first} and {second} in 60 draws")


def task_of_batch(trainer, keys):
    tasks = {trainer.registry.task_of_case(k) for k in keys}
    return trainer.registry.names[tasks.pop()] if len(tasks) == 1 else None  # None: a batch that mixes tasks


def _idle_and_moved(trainer, batch):
    """Train one step; per parameter the elements whose gradient was zero at the step, and those that changed."""
    network = trainer._plain_network()
    before = {n: p.detach().clone() for n, p in network.named_parameters()}
    idle = {}

    def capture(optimizer, _args, _kwargs):  # global hooks run before the optimiser's own
        if optimizer is trainer.optimizer:
            for n, p in network.named_parameters():
                idle[n] = torch.ones_like(p, dtype=torch.bool) if p.grad is None else p.grad == 0

    handle = register_optimizer_step_pre_hook(capture)
    try:
        trainer.train_step(batch)
    finally:
        handle.remove()
    moved = {n: p.detach() != before[n] for n, p in network.named_parameters()}
    return idle, moved


def idle_parameters_check(make_trainer, first, second, expected_idle: str, condition_of_batch=task_of_batch):
    """With the hooks (the default) nothing idle moves; without them something idle does. Steps on a batch of
    condition `first`, then of `second`; `expected_idle` names a parameter with elements that the first step
    trained and the second leaves idle (not one that is always idle, such as the lowest deep-supervision head)."""
    drift = {}
    for hooks in (True, False):
        trainer = make_trainer(hooks)
        trainer.on_train_start()  # as nnU-Net's run_training: loaders, EMA, ...
        batches = _batches_of(trainer, condition_of_batch, first, second)
        trainer.on_train_epoch_start()
        idle_first, _ = _idle_and_moved(trainer, batches[0])  # the first task's parameters now carry state
        idle, moved = _idle_and_moved(trainer, batches[1])
        assert any((idle[n] & ~idle_first[n]).any() for n in idle if expected_idle in n), \
            f"nothing in {expected_idle} that the first step trained is idle in the second"
        drift[hooks] = sorted(n for n in idle if (idle[n] & moved[n]).any())
        assert any(moved[n].any() for n in moved)  # the step trained
    assert drift[True] == []
    assert drift[False], "without the hooks nothing idle moved: the check would not catch drift"


COLLECTION_TRAINERS = {  # trainer: (second task, a parameter idle in its batches)
    "UniSegTrainer": ("SynthBrainMR", "conv_1."),  # a 4-channel batch: the 1-channel stem
    "UniSegTrainerDecoderFiLM": ("SynthBrainMR", "film"),
    "DoDNetTrainer": ("SynthBrainMR", "controller"),
    "UniSegTrainerTaskHeads": ("SynthBrainMR", "seg_layers"),  # the liver task's rows
    "HermesTrainer": ("SynthBrainMR", "task_table"),
    "M4oETrainer": ("SynthBrainMR", "dataset_heads"),
    "M4oEPretrainTrainer": ("SynthBrainMR", "experts.0."),  # the CT expert under an MR batch
}


@pytest.mark.integration
@pytest.mark.parametrize("trainer_name", list(COLLECTION_TRAINERS))
def test_every_collection_trainer_keeps_idle_parameters_still(trainer_name, collection_workspace, monkeypatch):
    from conftest import COLLECTION_ID, PLANS, trainer_maker
    make = trainer_maker(trainer_name, collection_workspace["env"], f"Dataset{COLLECTION_ID}_Synth", PLANS,
                         "3d_fullres", monkeypatch)
    second, expected = COLLECTION_TRAINERS[trainer_name]
    idle_parameters_check(make, "SynthLiverCT", second, expected)


@pytest.mark.integration
@pytest.mark.parametrize("trainer_name, expected", [("M4oESwinTrainer", "dataset_heads"),
                                                    ("M4oESwinPretrainTrainer", "experts.0.")])
def test_the_swin_unet_keeps_idle_parameters_still(trainer_name, expected, swin_workspace, monkeypatch):
    """M4oE's own network under AdamW (phase 2: weight decay 1e-4; phase 1: 0.05)."""
    from conftest import trainer_maker
    make = trainer_maker(trainer_name, swin_workspace["env"], swin_workspace["dataset"], swin_workspace["plans"],
                         "2d", monkeypatch)
    idle_parameters_check(make, "SynthLiverCT", "SynthBrainMR", expected)


def view_of_single_view_batch(trainer, keys):
    views = set(trainer.metadata.view_indices(keys))
    return trainer.metadata.views[views.pop()] if len(views) == 1 else None


@pytest.mark.integration
def test_the_echo_model_keeps_other_views_prompts_still(echo_workspace, monkeypatch):
    """MADGRAD moves a zero-gradient element towards its dual average; the other view's prompt slots stay."""
    from conftest import trainer_maker
    env = echo_workspace["env"]
    for k in ("nnUNet_universal_sam_checkpoint", "nnUNet_universal_clinicalbert", "HF_HUB_OFFLINE",
              "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(k, env[k])
    make = trainer_maker("EchoPromptTrainer", env, f"Dataset{echo_workspace['collection']}_SynthEcho",
                         "EchoPlansTest", "3d_fullres", monkeypatch)
    metadata = load_json(join(echo_workspace["raw"], "dataset.json"))["echo_case_metadata"]
    views = sorted({m["view"] for m in metadata.values()})
    idle_parameters_check(make, views[0], views[1], "prompt_pool.keys", view_of_single_view_batch)
