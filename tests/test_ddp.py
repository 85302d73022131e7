"""DDP with different tasks and channel counts per rank: no 'unused parameters' error, gradients stay in sync.

Runs two CPU processes with the gloo backend (nnU-Net's own -num_gpus path needs GPUs; the property under test is
the network's: every parameter takes part in every step, whichever stem and task a rank's batch uses)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.networks.uniseg import UniSegNetwork

TINY = dict(input_channels=1, n_stages=3, features_per_stage=[4, 8, 8], conv_op=nn.Conv3d,
            kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            n_conv_per_stage=1, num_classes=4, n_conv_per_stage_decoder=1, num_tasks=3, patch_size=[4, 16, 16],
            stem_channels=[1, 2, 4], norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
            nonlin=nn.LeakyReLU, deep_supervision=True)


ECHO_TINY = dict(n_stages=3, features_per_stage=[4, 8, 8], conv_op=nn.Conv3d, kernel_sizes=3,
                 strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage=1, n_conv_per_stage_decoder=1,
                 conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU,
                 num_views=3, prompts_per_view=3, prompt_length=5, top_k=3, query_dim=16, query_image_size=32,
                 text_dim=32, score_dim=8, code_dim=16, head_channels=8)


def _network(kind: str) -> nn.Module:
    if kind == "uniseg":
        return UniSegNetwork(**TINY)
    if kind == "m4oe":
        from nnunetv2_universal.networks.m4oe import M4oEUNet
        kw = {k: v for k, v in TINY.items() if k != "patch_size"}
        return M4oEUNet(**kw, moe_min_downsampling=2)
    if kind == "task_heads":
        from nnunetv2_universal.networks.task_heads import TaskHeadsUNet
        kw = {k: v for k, v in TINY.items() if k not in ("patch_size", "num_tasks")}
        return TaskHeadsUNet(**kw, task_num_classes=[3, 2, 4])
    if kind == "echo":
        from nnunetv2_universal.networks.echo_prompt import EchoPromptNetwork
        net = EchoPromptNetwork(input_channels=1, num_classes=2, **ECHO_TINY)
        net.class_embeddings.normal_()  # stands in for the trainer's ClinicalBERT embeddings
        net.class_embeddings_ready.fill_(True)
        return net
    from nnunetv2_universal.networks.hermes import HermesNetwork
    kw = {k: v for k, v in TINY.items() if k not in ("patch_size", "n_conv_per_stage", "num_tasks")}
    return HermesNetwork(**kw, n_blocks_per_stage=1, num_global_tasks=4, fusion_min_downsampling=2,
                         fusion_depth=1, bottleneck_fusion_depth=1)


def _batch(rank: int, step: int):
    torch.manual_seed(100 + 10 * rank + step)
    return torch.randn(1, 1 if rank == 0 else 4, 4, 16, 16)


def _loss(model, kind: str, rank: int, step: int) -> torch.Tensor:
    """Each rank its own task / stem / view; the loss the method's trainer adds (modality loss, matching loss)."""
    x = _batch(rank, step)
    if kind == "echo":  # one channel; different views per rank; as EchoPromptTrainer under DDP: with_aux
        query = torch.randn(1, ECHO_TINY["query_dim"])
        logits, aux = model(x[:, :1], query=query, views=torch.tensor([0 if rank == 0 else 2]), with_aux=True)
        return logits.square().mean() + 0.4 * aux["scores"].square().mean() - aux["selection"].matching.mean()
    if kind == "hermes":  # different tasks and modalities per rank (one unknown)
        ids = torch.tensor([[0, -1]]) if rank == 0 else torch.tensor([[2, 3]])
        outputs = model(x, task_ids=ids, modality_ids=torch.tensor([0 if rank == 0 else -1]))
    else:
        outputs = model(x, Condition(task=0 if rank == 0 else 2))
    loss = sum(w * o[:, :2].square().mean() for w, o in zip((1.0, 1e-6), outputs))
    if kind == "hermes":  # as HermesTrainer: the modality loss (zero for an unknown modality)
        from nnunetv2_universal.training.hermes_trainer import modality_loss
        module = model.module if isinstance(model, DDP) else model
        loss = loss + 0.01 * modality_loss(module.last_modality_logits, torch.tensor([0 if rank == 0 else -1]))
    return loss


def _gradients(module: nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in module.parameters()])


def _worker(rank: int, port: int, results, kind: str = "uniseg"):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # identical initial weights on both ranks
    model = DDP(_network(kind))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        optimizer.zero_grad()
        _loss(model, kind, rank, step).backward()
        if step == 0:
            results[f"gradients{rank}"] = _gradients(model.module)
        optimizer.step()
    results[rank] = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["uniseg", "m4oe", "hermes", "echo", "task_heads"])
def test_ddp_mixed_tasks_and_stems_stay_in_sync(kind):
    """Each rank a different task (M4oE: another dataset head; task heads: another task's channels; Hermes: other task priors, one unknown modality; echo:
    another view) and channel count: DDP without find_unused_parameters must not fail, its gradients equal those of
    one process averaging the two ranks' batches, and both ranks end with equal weights."""
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results, kind), nprocs=2, join=True)
    assert torch.equal(results[0], results[1])
    torch.manual_seed(0)
    single = _network(kind)
    (0.5 * (_loss(single, kind, 0, 0) + _loss(single, kind, 1, 0))).backward()
    torch.testing.assert_close(results["gradients0"], _gradients(single), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results["gradients1"], _gradients(single), rtol=1e-4, atol=1e-6)
