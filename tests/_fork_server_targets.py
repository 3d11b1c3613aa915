"""Rank functions for tests/test_fork_server.py, importable by name in every rank."""

from __future__ import annotations

import importlib
import os
import sys
import time


def loaded(rank: int, name: str) -> tuple[bool, int]:
    """Whether ``name`` was imported before the rank began; the rank's parent."""
    return name in sys.modules, os.getppid()


def parent(rank: int) -> int:
    return os.getppid()


def import_module(rank: int, name: str) -> int:
    importlib.import_module(name)
    return os.getppid()


def cwd(rank: int) -> str:
    return os.getcwd()


def wait_for(rank: int, path: str) -> int:
    """Return once ``path`` exists (bounded); the rank's parent."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {path} within 60 s")
        time.sleep(0.01)
    return os.getppid()


def credentials(rank: int) -> dict[str, object]:
    """Who the rank runs as, and its parent (the server)."""
    return {
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
        "groups": sorted(os.getgroups()),
        "server": os.getppid(),
    }
