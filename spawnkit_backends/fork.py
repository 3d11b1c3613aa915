"""``fork``: ``multiprocessing``'s fork start method; ranks inherit the parent's memory."""

from __future__ import annotations

import os
import sys
from functools import partial

from spawnkit import plugin


def _unavailable() -> str | None:
    if not hasattr(os, "fork"):
        return f"fork() does not exist on {sys.platform}; use 'spawn' or 'subprocess'"
    return None


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    from ._mp import MultiprocessingBackend

    registry.add(
        "fork",
        partial(MultiprocessingBackend, "fork"),
        pickles=False,
        unavailable=_unavailable(),
        description="multiprocessing fork: copies the parent, takes unpicklable fn/args; POSIX",
    )
