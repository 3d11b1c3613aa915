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


def _settle_before_exit() -> None:
    """Why a rank ends its training with ``dist.barrier()``, which the tutorial does not.

    torch 2.13 races at exit: a gradient all-reduce keeps ``backward()``'s Python context
    (autograd's thread-local state) and gloo's worker thread drops it, with the GIL, just
    after the step returns. If the interpreter is finalizing by then, that thread exits
    inside a C++ destructor and the rank dies from SIGABRT ("terminate called without an
    active exception"), under torch's own spawn as under spawnkit (4 of 30 runs). A barrier
    waits with the GIL released, so the context is dropped before the rank returns.
    """


def demo_basic(rank: int, world_size: int, out_dir: str) -> None:
    """The DDP tutorial's ``demo_basic``, without setting MASTER_ADDR/MASTER_PORT itself,
    and with a barrier after training (see :func:`_settle_before_exit`).

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
        dist.barrier()  # not the tutorial's: see _settle_before_exit
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


def _train_step(ddp_model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One step of the tutorial's training: its backward all-reduces the gradients."""
    optimizer.zero_grad()
    outputs = ddp_model(torch.randn(20, 10))
    nn.MSELoss()(outputs, torch.randn(20, 5)).backward()
    optimizer.step()


def demo_basic_failing_once(
    rank: int, world_size: int, out_dir: str, failing_rank: int
) -> tuple[int, str, float]:
    """The DDP tutorial's training, whose ``failing_rank`` raises in the job's first attempt.

    Every rank records the attempt's ``MASTER_PORT`` in ``out_dir`` as it starts. In attempt
    0, after one DDP step together, the other ranks block in the second step's gradient
    all-reduce and ``failing_rank`` raises once they are in it (so the collective is live),
    never joining it. A later attempt trains three steps and returns ``(attempt, port, sum
    of the trained parameters)``.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    port = os.environ["MASTER_PORT"]
    with open(os.path.join(out_dir, f"attempt{attempt}-rank{rank}-port"), "w") as f:
        f.write(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(rank)  # different data on each rank, as in real training
        model = ToyModel()
        ddp_model = DDP(model)
        optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.001)
        _train_step(ddp_model, optimizer)
        if attempt == 0:
            if rank == failing_rank:
                for peer in range(world_size):
                    if peer != rank:
                        _wait_for(os.path.join(out_dir, f"attempt0-rank{peer}-in-step-2"))
                raise RuntimeError(f"rank {rank} fails in attempt 0 after one DDP step")
            with open(os.path.join(out_dir, f"attempt0-rank{rank}-in-step-2"), "w"):
                pass
            _train_step(ddp_model, optimizer)  # never completes: failing_rank never joins
            with open(os.path.join(out_dir, f"attempt0-rank{rank}-finished"), "w"):
                pass
        else:
            for _ in range(2):
                _train_step(ddp_model, optimizer)
            dist.barrier()  # see _settle_before_exit
        total = float(sum(p.detach().sum() for p in model.parameters()))
        return attempt, port, total
    finally:
        if attempt != 0:
            # (In attempt 0 a peer is gone mid-collective: leaving the group could block.)
            dist.destroy_process_group()
