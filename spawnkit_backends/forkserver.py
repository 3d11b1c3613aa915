"""``forkserver``: ``multiprocessing``'s fork server; ranks fork from a clean server process."""

from __future__ import annotations

import sys
from functools import partial

import spawnkit


def _unavailable() -> str | None:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return f"multiprocessing has no forkserver start method on {sys.platform}"
    return None


@spawnkit.hookimpl
def spawnkit_register_backends(registry: spawnkit.BackendRegistry) -> None:
    from ._mp import MultiprocessingBackend

    registry.add(
        "forkserver",
        partial(MultiprocessingBackend, "forkserver"),
        unavailable=_unavailable(),
        description="multiprocessing forkserver: forks from a warm server process; POSIX",
    )
