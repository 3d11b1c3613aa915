"""Worker functions for test_newcomer.py: what a new user's first jobs do."""

from __future__ import annotations

import sys
from typing import Any


def raise_value_error(rank: int) -> None:
    raise ValueError(f"rank {rank} is unhappy")


def fail_after_output(rank: int) -> None:
    print(f"rank {rank} says hello", file=sys.stderr, flush=True)
    if rank == 1:
        raise RuntimeError("loss is nan")


def put_rank(rank: int, queue: Any) -> None:
    queue.put(rank)


def rank_number(rank: int) -> int:
    return rank
