"""A job whose rank 2 fails part-way: what `spawnkit run` shows when a job fails."""

from __future__ import annotations

import time


def train(rank: int, steps: str = "3") -> None:
    for step in range(int(steps)):
        print(f"step {step}", flush=True)
        if rank == 2 and step == 1:
            raise RuntimeError("loss is nan")
        time.sleep(0.2)
