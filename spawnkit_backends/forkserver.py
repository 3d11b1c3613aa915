"""``forkserver``: ``multiprocessing``'s fork server; ranks fork from a clean server process."""

from __future__ import annotations

import sys

from spawnkit import plugin


def _unavailable() -> str | None:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return f"multiprocessing has no forkserver start method on {sys.platform}"
    return None


# What every worker imports before user code: loaded once in the fork server, each worker
# inherits it instead of importing it again (milliseconds per rank).
_WORKER_MODULES = ("spawnkit._child", "spawnkit_backends._mp_worker", "spawnkit._watches.pidfd")


def _backend() -> plugin.Backend:
    from multiprocessing import forkserver

    from ._mp import MultiprocessingBackend

    server = getattr(forkserver, "_forkserver", None)
    preload = getattr(server, "_preload_modules", None)
    # Only before the server starts, and keeping the program's own preload list: the
    # stdlib offers set_forkserver_preload() but no getter, hence the private read.
    if getattr(server, "_forkserver_pid", 0) is None and isinstance(preload, list):
        extra = [m for m in _WORKER_MODULES if m not in preload]
        if extra:
            forkserver.set_forkserver_preload([*preload, *extra])
    return MultiprocessingBackend("forkserver")


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        "forkserver",
        _backend,
        unavailable=_unavailable(),
        description="multiprocessing forkserver: forks from a warm server process; POSIX",
    )
