"""Worker functions for test_core_hardening: module-level, so every backend can load them."""

from __future__ import annotations

import os
import time


def check_in_and_block(rank: int, where: str) -> None:
    """Say this rank runs (a file named after it), then block until stopped."""
    path = os.path.join(where, f"rank-{rank}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)  # whole, or not there: a reader never sees it half-written
    while True:
        time.sleep(60)


def rank_number(rank: int) -> int:
    return rank


def use_shared_memory(rank: int, name: str | None = None) -> None:
    """Attach to the parent's segment ``name``, if any, and make (and remove) one of the
    rank's own."""
    from multiprocessing import shared_memory

    if name is not None:
        shared_memory.SharedMemory(name=name).close()
    own = shared_memory.SharedMemory(create=True, size=8)
    own.close()
    own.unlink()
