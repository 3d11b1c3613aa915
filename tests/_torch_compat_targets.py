"""Worker functions for tests/test_torch_compat.py and the torch-only tests: importable by
name, for every backend."""

from __future__ import annotations

import threading

from spawnkit.testing._targets import block_forever


def raise_while_a_thread_lives(rank: int) -> None:
    """Rank 0 raises while a non-daemon thread keeps its process from ever exiting."""
    if rank != 0:
        block_forever()
    # Waits forever: Python waits for it at exit, so the process outlives its report.
    threading.Thread(target=threading.Event().wait, name="keeps-it-alive", daemon=False).start()
    raise ValueError("rank 0 failed, and its thread lives on")


def raise_or_block(rank: int) -> None:
    """Rank 0 raises at once; every other rank runs until stopped."""
    if rank == 0:
        raise ValueError("bad input")
    block_forever()
