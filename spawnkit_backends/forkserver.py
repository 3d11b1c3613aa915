"""``forkserver``: ranks forked from a warm server process of spawnkit's own.

The server is a fresh interpreter that imports the job's ``__main__`` and the ``preload``
modules once; every rank is a fork of it (see ``_fork_server``).
"""

from __future__ import annotations

from spawnkit import plugin

from ._fork_server import NAME, unavailable_reason


def _backend(preload: object = None) -> plugin.Backend:
    from ._fork_server import ForkServerBackend

    return ForkServerBackend(preload)  # type: ignore[arg-type]


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        NAME,
        _backend,
        options=("preload",),
        unavailable=unavailable_reason(),
        description="forks ranks from a warm server with __main__ and preload imported; POSIX",
    )
