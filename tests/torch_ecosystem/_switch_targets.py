"""Rank functions for tests/torch_ecosystem/test_switch.py: no torch, so ranks start fast."""

from __future__ import annotations

import os


def parent(rank: int) -> int:
    """The rank's parent: the job's process under fork and spawn, the server under forkserver."""
    return os.getppid()
