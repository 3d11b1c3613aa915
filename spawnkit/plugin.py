"""What a backend or parent-watch plugin builds on: ``import spawnkit.plugin``.

The contracts (:class:`Backend`, :class:`WorkerHandle`, the watch halves), the spec core
hands a backend, the registries its hook fills, ``hookimpl``, and the helpers every backend
uses: :func:`run_worker` (a worker's first call), :func:`signal_process_group`,
:func:`start_helper_thread` and :func:`mark_parent_only`. The top-level ``spawnkit`` module
is the user's API; these names are reachable there too, for plugins written before this
module existed.

Names load on first use: a worker that imports this module to call ``run_worker`` pays for
nothing else.
"""

from __future__ import annotations

__all__ = [
    "Backend",
    "BackendInfo",
    "BackendRegistry",
    "ChildWatch",
    "ParentWatch",
    "WatchInfo",
    "WatchRegistry",
    "WorkerHandle",
    "WorkerSpec",
    "hookimpl",
    "mark_parent_only",
    "run_worker",
    "signal_process_group",
    "start_helper_thread",
    "unmark_parent_only",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._child import run_worker
    from ._protocols import Backend, ChildWatch, ParentWatch, WorkerHandle
    from ._registry import BackendInfo, BackendRegistry, WatchInfo, WatchRegistry
    from ._spec import WorkerSpec, mark_parent_only, unmark_parent_only
    from ._threads import start_helper_thread
    from ._tree import signal_process_group
    from .hookspecs import hookimpl


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module 'spawnkit.plugin' has no attribute {name!r}")
    import spawnkit

    value = getattr(spawnkit, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
