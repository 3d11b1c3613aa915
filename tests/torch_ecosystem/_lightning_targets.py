"""A tiny LightningModule and Fabric functions, importable by name in every rank.

As small as Lightning allows: one epoch, two steps, two ranks, so the tests' time goes to
starting processes, as in real use.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn


class TinyModel(pl.LightningModule):  # type: ignore[misc]
    """Linear regression on 16 random samples, batch 4: two steps per rank and epoch."""

    def __init__(self, fail_on_rank: int | None = None) -> None:
        super().__init__()
        self.fail_on_rank = fail_on_rank
        self.layer = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)  # type: ignore[no-any-return]

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_on_rank == self.global_rank:
            raise ValueError(f"training fails on rank {self.global_rank}")
        loss = self._loss(batch)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), sync_dist=True)
        self.log("val_rank", float(self.global_rank), reduce_fx="max", sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> Any:
        return _loader()

    def val_dataloader(self) -> Any:
        return _loader()


def _loader() -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)


def fabric_work(fabric: Any, scale: int) -> dict[str, Any]:
    """A Fabric function: an all-reduce across the ranks; every rank returns its view."""
    total = fabric.all_reduce(torch.tensor(float(fabric.global_rank + 1)), reduce_op="sum")
    # spawnkit's ranks lead their own process group; torch's do not.
    leader = os.getpgrp() == os.getpid()
    return {"rank": fabric.global_rank, "group_leader": leader, "total": float(total) * scale}


def fabric_fail(fabric: Any) -> None:
    if fabric.global_rank == 1:
        raise ValueError("fabric rank 1 fails")
    fabric.barrier()
