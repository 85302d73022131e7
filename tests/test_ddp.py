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


def _worker(rank: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # identical initial weights on both ranks
    model = DDP(UniSegNetwork(**TINY))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    channels, task = (1, 0) if rank == 0 else (4, 2)
    torch.manual_seed(100 + rank)
    for _ in range(2):
        x = torch.randn(1, channels, 4, 16, 16)
        outputs = model(x, Condition(task=task))
        loss = sum(w * o[:, :2].square().mean() for w, o in zip((1.0, 1e-6), outputs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    results[rank] = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_mixed_tasks_and_stems_stay_in_sync():
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    assert torch.equal(results[0], results[1])
