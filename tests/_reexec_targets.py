"""Worker functions for the ``subprocess`` backend's tests; importable by any Python 3.10+."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any


def environment(rank: int) -> dict[str, str]:
    return dict(os.environ)


def surroundings(rank: int) -> dict[str, Any]:
    """What the worker's interpreter looks like from inside."""
    return {
        "rank": rank,
        "cwd": os.getcwd(),
        "executable": sys.executable,
        "version": tuple(sys.version_info[:2]),
        "xoptions": dict(sys._xoptions),
        "optimize": sys.flags.optimize,
        "path": list(sys.path),
        "argv": list(sys.argv),
        "main": sys.modules["__main__"].__name__,
    }


def tracker_descriptor(rank: int, look_first: bool = False) -> int | None:
    """The descriptor this rank's resource tracker writes to; ``None``: none yet.

    ``look_first``: look the module up (and copy its spec) before importing it, as an
    availability check may.
    """
    if look_first:
        import copy
        import importlib.util

        copy.deepcopy(importlib.util.find_spec("multiprocessing.resource_tracker"))
    from multiprocessing import resource_tracker

    fd: int | None = resource_tracker._resource_tracker._fd  # type: ignore[attr-defined]
    return fd


def checksum(rank: int, data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def open_descriptors(rank: int) -> dict[int, str]:
    """Every descriptor this worker holds and what it refers to (Linux)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory listing's own descriptor, closed by now
            pass
    return found


def ready_then_block(rank: int, directory: str, payload: str) -> None:
    """Hold ``payload`` in memory, say so, and wait for a signal."""
    assert payload
    (Path(directory) / f"{rank}.ready").touch()
    while True:
        signal.pause()


def touch(rank: int, directory: str) -> None:
    (Path(directory) / str(rank)).touch()


def identity(rank: int, value: Any) -> Any:
    return value


def exit_with(rank: int, code: int) -> None:
    os._exit(code)
