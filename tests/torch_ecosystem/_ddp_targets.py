"""PyTorch's DDP tutorial with gloo, as rank functions importable by name in every rank.

Only torch is imported here: a rank of these tests pays for nothing else.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist
from torch import nn

# How long a rank waits for its peer's signal file: the peer imports torch first (seconds on
# a loaded 2-core machine) before it can write it.
PEER_WAIT = 60.0


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + PEER_WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {path} within {PEER_WAIT} s")
        time.sleep(0.01)


class ToyModel(nn.Module):
    """The DDP tutorial's model."""

    def __init__(self) -> None:
        super().__init__()
        self.net1 = nn.Linear(10, 10)
        self.relu = nn.ReLU()
        self.net2 = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net2(self.relu(self.net1(x)))  # type: ignore[no-any-return]


def demo_basic(rank: int, world_size: int, out_dir: str) -> None:
    """The DDP tutorial's ``demo_basic``, without setting MASTER_ADDR/MASTER_PORT itself.

    Writes the trained parameters' sum (DDP keeps the replicas equal, so every rank's is
    the same if the gradients were really all-reduced between the processes) and whether
    the rank leads its own process group, as spawnkit's do.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(rank)  # different data on each rank, as in real training
        model = ToyModel()
        ddp_model = DDP(model)
        loss_fn = nn.MSELoss()
        optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.001)
        optimizer.zero_grad()
        outputs = ddp_model(torch.randn(20, 10))
        loss_fn(outputs, torch.randn(20, 5)).backward()
        optimizer.step()
        total = float(sum(p.detach().sum() for p in model.parameters()))
        # spawnkit's ranks lead their own process group; torch's do not.
        with open(os.path.join(out_dir, f"rank{rank}"), "w") as f:
            f.write(repr((total, os.getpgrp() == os.getpid())))
    finally:
        dist.destroy_process_group()


def fail_during_all_reduce(rank: int, world_size: int, out_dir: str) -> None:
    """Rank 0 blocks in ``all_reduce`` waiting for rank 1, which raises instead."""
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    entered = os.path.join(out_dir, "rank0-in-all-reduce")
    if rank == 1:
        _wait_for(entered)
        raise ValueError("rank 1 fails while rank 0 waits in all_reduce")
    with open(entered, "w"):
        pass
    dist.all_reduce(torch.ones(1))  # never completes: rank 1 never joins it
    with open(os.path.join(out_dir, "rank0-finished"), "w"):
        pass
