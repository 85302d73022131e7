"""Hermes parts: prior selection and attention masks, task-subset requests, the posterior heads, masked losses,
the modality loss, and adding tasks to a trained model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.networks.hermes import HermesNetwork, PriorFusion
from nnunetv2_universal.training.hermes_trainer import (adaptive_tversky, freeze_all_but_new_task_rows,
                                                         hermes_segmentation_loss, modality_id, new_task_rows)


def small(**overrides) -> HermesNetwork:
    kwargs = dict(input_channels=1, n_stages=4, features_per_stage=[8, 16, 32, 32], conv_op=nn.Conv3d, kernel_sizes=3,
                  strides=[1, 2, 2, 2], n_blocks_per_stage=1, num_classes=1, n_conv_per_stage_decoder=1,
                  num_global_tasks=6, task_label_counts=[2, 1, 3], task_modality_ids=[0, 0, 2],
                  norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return HermesNetwork(**kwargs)


def test_prior_selection_and_null_masking():
    fusion = PriorFusion(32, num_tasks=5, num_modalities=3, modality_tokens=4, depth=1)
    priors, visible = fusion.select(torch.tensor([[0, 4, -1], [2, -1, -1]]), torch.tensor([1, -1]))
    assert priors.shape == (2, 3 + 4, 32)
    assert torch.equal(priors[0, 2], fusion.task_table[5]) and torch.equal(priors[1, 3:], fusion.modality_table[3])
    assert visible.tolist() == [[True, True, False] + [True] * 4, [True, False, False] + [True] * 4]
    x = torch.randn(2, 32, 2, 4, 4)
    out, posteriors = fusion(x, torch.tensor([[0, 4, -1], [2, -1, -1]]), torch.tensor([1, -1]))
    assert out.shape == x.shape and posteriors.shape == (2, 7, 32)
    # with masking, the voxels' output does not depend on how many null tokens pad the request
    padded, _ = fusion(x[:1], torch.tensor([[0, 4, -1, -1, -1]]), torch.tensor([1]))
    assert torch.allclose(out[:1], padded, atol=1e-5)


def test_requested_tasks_are_exactly_the_output_channels():
    net = small().eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        ab = net(x, task_ids=torch.tensor([[1, 4]]), modality_ids=torch.tensor([0]))
        ba = net(x, task_ids=torch.tensor([[4, 1]]), modality_ids=torch.tensor([0]))
        single = net(x, task_ids=torch.tensor([[4]]), modality_ids=torch.tensor([0]))
    assert ab.shape == (1, 2, 16, 32, 32)
    assert torch.allclose(ab[:, 0], ba[:, 1], atol=1e-4) and torch.allclose(ab[:, 1], ba[:, 0], atol=1e-4)
    assert not torch.allclose(single[:, 0], ab[:, 1], atol=1e-6)  # requested tasks are context for each other
    net.condition = Condition(task=2)  # registry task 2: global tasks 3, 4, 5 and its modality (2)
    with torch.no_grad():
        out = net(x)
        direct = net(x, task_ids=torch.tensor([[3, 4, 5, -1]]), modality_ids=torch.tensor([2]))
        without_null = net(x, task_ids=torch.tensor([[3, 4, 5]]), modality_ids=torch.tensor([2]))
    assert out.shape == (1, 4, 16, 32, 32) and not out[:, 0].any()  # zero background channel for the export
    # prediction sends the task's tokens plus one visible null token, as training does
    assert torch.allclose(out[:, 1:], direct[:, :3], atol=1e-5)
    assert not torch.allclose(out[:, 1:], without_null, atol=1e-4)
    with pytest.raises(ValueError, match="task ids"):
        net(x, task_ids=torch.tensor([[6]]), modality_ids=torch.tensor([0]))


def test_deep_supervision_outputs_and_modality_logits():
    net = small(deep_supervision=True)
    out = net(torch.randn(2, 1, 16, 32, 32), task_ids=torch.tensor([[0, -1], [5, 1]]),
              modality_ids=torch.tensor([0, -1]))
    assert [o.shape[1:3] for o in out] == [(2, 16), (2, 8), (2, 4)]
    assert net.last_modality_logits.shape == (2, 6)  # 5 modalities + the unknown slot, as the reference's 6
    assert sum(f is not None for f in net.encoder_fusion) == 2 and sum(f is not None for f in net.decoder_fusion) == 1


def test_masked_task_losses_and_modality_loss_give_zero_gradient_where_they_should():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 4, 8, 8))
    valid = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # null / padded columns
    hermes_segmentation_loss(logits, labels, torch.tensor([1, 2, -1]), valid).backward()
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[1, 1:].abs().sum() == 0
    assert logits.grad[0, :2].abs().sum() > 0
    modality_logits = torch.randn(2, 5, requires_grad=True)
    torch.nn.functional.cross_entropy(modality_logits, torch.tensor([1, -1]), ignore_index=-1).backward()
    assert modality_logits.grad[1].abs().sum() == 0 and modality_logits.grad[0].abs().sum() > 0


def test_adaptive_tversky_alpha_is_clamped():
    target = torch.zeros(1, 1, 10)
    target[..., :5] = 1
    probs = torch.zeros(1, 1, 10)
    probs[..., :5] = 1
    probs[..., 5:] = 1  # only false positives: alpha clamps at 0.8
    loss = adaptive_tversky(probs, target, torch.ones(1, 1))
    assert loss == pytest.approx(1 - 5 / (5 + 0.8 * 5), abs=1e-5)
    assert [modality_id(n) for n in ("CT", "pet", "MRI", "cineMRI")] == [0, 1, -1, 4]


def test_adding_tasks_keeps_trained_priors_and_trains_only_the_new_rows():
    net = small()
    grown = small(num_global_tasks=7, task_label_counts=[2, 1, 3, 1], task_modality_ids=[0, 0, 2, 1])
    grown.load_state_dict(new_task_rows(net.state_dict(), 1))
    for old, new in zip([f for f in net.encoder_fusion if f is not None], [f for f in grown.encoder_fusion if f]):
        assert torch.equal(new.task_table[:6], old.task_table[:6]) and torch.equal(new.task_table[7], old.task_table[6])
    freeze_all_but_new_task_rows(grown, old_rows=6)
    out = grown(torch.randn(1, 1, 16, 32, 32), task_ids=torch.tensor([[2, 6, -1]]), modality_ids=torch.tensor([1]))
    out.sum().backward()
    tables = [f.task_table for f in list(grown.encoder_fusion) + list(grown.decoder_fusion) if f is not None]
    for table in tables:
        assert table.grad[:6].abs().sum() == 0 and table.grad[7].abs().sum() == 0 and table.grad[6].abs().sum() > 0
    assert all(p.grad is None for n, p in grown.named_parameters() if not n.endswith(".task_table"))


def test_add_tasks_command_output_loads_with_nnunet_pretrained_loader(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunetv2_universal.finetuning.hermes_tasks import main
    net = small()
    torch.save({"network_weights": net.state_dict()}, tmp_path / "checkpoint_final.pth")
    main(["-i", str(tmp_path / "checkpoint_final.pth"), "-o", str(tmp_path / "grown.pth"), "--new_tasks", "1"])
    grown = small(num_global_tasks=7, task_label_counts=[2, 1, 3, 1], task_modality_ids=[0, 0, 2, 1])
    load_pretrained_weights(grown, str(tmp_path / "grown.pth"))
    assert torch.equal(grown.encoder_fusion[2].task_table[:6], net.encoder_fusion[2].task_table[:6])


def test_label_subset_of_a_registry_task_through_the_condition():
    """Condition(task, labels): Hermes computes only the requested priors and returns the task's channel layout
    with the others far below the background (nnU-Net's export then never outputs them)."""
    net = small().eval()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        net.condition = Condition(task=2, labels=(1, 3))
        out = net(x)
        direct = net(x, task_ids=torch.tensor([[3, 5, -1]]), modality_ids=torch.tensor([2]))
    assert out.shape == (1, 4, 16, 32, 32)
    assert torch.allclose(out[:, 1], direct[:, 0], atol=1e-5) and torch.allclose(out[:, 3], direct[:, 1], atol=1e-5)
    assert (out[:, 2] == -30).all() and out.argmax(1).ne(2).all()


def test_predictor_restricts_any_network_to_labels():
    from nnunetv2_universal.inference.predictor import restrict_to_labels
    logits = torch.randn(1, 4, 3, 3)
    logits[:, 2] = 100
    out = restrict_to_labels(logits, (1, 3))
    assert out.argmax(1).ne(2).all() and torch.equal(out[:, [0, 1, 3]], logits[:, [0, 1, 3]])


def test_hermes_plans_template_builds_the_reference_network():
    """The `hermes` template: 5 fusion points, posterior 1088, 128^3 crops at 1.5 mm, and with the reference's
    72 task rows (tn = 72) the reference's 60.88 M parameters."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2_universal.collection.templates import load_template
    template = load_template("hermes")
    assert template["patch_size"] == [128, 128, 128] and template["spacing"] == [1.5, 1.5, 1.5]
    kwargs = dict(template["arch_kwargs"], num_global_tasks=72, num_modalities=5)
    net = get_network_from_plans(template["network_class_name"], kwargs, template["_kw_requires_import"], 1, 23,
                                 allow_init=True, deep_supervision=True)
    fusion = [f for f in list(net.encoder_fusion) + list(net.decoder_fusion) if f is not None]
    assert [f.task_table.shape[1] for f in fusion] == [128, 256, 320, 256, 128]
    assert [len(f.blocks) for f in fusion] == [2, 2, 4, 2, 2]
    assert net.head.norm.normalized_shape == (1088,)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - 60.88e6) / 60.88e6 < 0.002, count
    # the deep-supervision levels add only their kernel projections (15 k) to the reference's single head
    assert sum(p.numel() for p in net.level_kernels.parameters()) < 20_000


def test_reference_schedule_exponential_warm_up_then_poly():
    from nnunetv2_universal.training.hermes_trainer import WarmupPolyLRScheduler
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupPolyLRScheduler(optimizer, 2e-3, 200, 5)
    lrs = []
    for epoch in range(8):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    import math
    assert lrs[:5] == pytest.approx([2e-3 * math.exp(10 * (e / 5 - 1)) for e in range(5)])
    assert lrs[5:] == pytest.approx([2e-3 * (1 - e / 200) ** 0.9 for e in range(5, 8)])
    WarmupPolyLRScheduler(optimizer, 2e-3, 200, 5, "linear").step(0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 5)


def test_ema_follows_the_reference_decay_and_survives_a_checkpoint(tmp_path):
    """decay min(1 - 1/(n + 1), 0.99): the first update copies, the second averages evenly; checkpoints hold the EMA
    under network_weights and the raw weights for resuming."""
    from torch.optim.swa_utils import AveragedModel
    from nnunetv2_universal.training.checkpointing import SafeCheckpoints
    from nnunetv2_universal.training.ema import EMAWeights, capped_ema, update_ema
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    ema = AveragedModel(net, multi_avg_fn=capped_ema(0.99), use_buffers=False)
    values = [2.0, 4.0, 10.0]
    for v in values:
        net[0].weight.data.fill_(v)
        net[1].running_mean.fill_(v)
        update_ema(ema, net)
    # n=0: copy (2); n=1: decay 1/2 -> 3; n=2: decay 2/3 -> 3 * 2/3 + 10/3
    assert ema.module[0].weight.item() == pytest.approx(3 * 2 / 3 + 10 / 3)
    assert ema.module[1].running_mean.item() == 10.0  # buffers are copied, as the reference does

    class Base:
        local_rank, disable_checkpointing, is_ddp, grad_scaler, _best_ema, current_epoch = 0, False, False, None, 0, 0
        my_init_kwargs, inference_allowed_mirroring_axes = {}, None

        def __init__(self):
            self.network = nn.Linear(1, 1, bias=False)
            self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.1)
            self.logger = type("L", (), {"get_checkpoint": lambda _: {}})()

        def load_checkpoint(self, filename):
            self.network.load_state_dict(torch.load(filename, weights_only=True)["network_weights"])

    class Trainer(EMAWeights, SafeCheckpoints, Base):
        pass

    trainer = Trainer()
    for v in values:
        trainer.network.weight.data.fill_(v)
        trainer.on_optimizer_step()
    path = str(tmp_path / "checkpoint_latest.pth")
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert saved["network_weights"]["weight"].item() == pytest.approx(3 * 2 / 3 + 10 / 3)
    assert saved["training_weights"]["weight"].item() == 10.0 and saved["ema_updates"] == 3
    resumed = Trainer()
    resumed.load_checkpoint(path)
    assert resumed.network.weight.item() == 10.0  # training continues from the raw weights
    assert resumed.ema.module.weight.item() == pytest.approx(3 * 2 / 3 + 10 / 3) and int(resumed.ema.n_averaged) == 3
