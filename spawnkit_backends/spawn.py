"""``spawn``: ``multiprocessing``'s spawn start method; a fresh interpreter per rank."""

from __future__ import annotations

from functools import partial

from spawnkit import plugin


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    from ._mp import MultiprocessingBackend

    registry.add(
        "spawn",
        partial(MultiprocessingBackend, "spawn"),
        description="multiprocessing spawn: a fresh interpreter per rank",
        needs_main_file=True,
    )
