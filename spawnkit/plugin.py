"""What a backend or parent-watch plugin builds on: ``import spawnkit.plugin``.

- The contracts: :class:`Backend` and :class:`WorkerHandle` (what core asks of any backend,
  local or remote), :class:`ProcessHandle` (the smaller one a local backend implements
  through :class:`LocalBackend`), the watch halves :class:`ParentWatch` and
  :class:`ChildWatch`.
- What travels: :class:`WorkerSpec` (core to worker), :class:`Report` (worker to core) and
  :class:`Outcome` (how a rank ended, handle to core).
- Building blocks: :class:`LocalBackend` (a local process per rank: implement
  ``start_process``), :class:`FreshInterpreterBackend` (a new interpreter per rank, as the
  built-in ``subprocess`` backend: override ``command_prefix`` or ``popen_options``),
  :func:`run_worker` (a local worker's first call), :func:`run_rank` (the part a worker
  hosted in someone else's process runs), :func:`signal_process_group`,
  :func:`start_helper_thread`, :func:`mark_parent_only`, and :func:`main_reference` with
  :func:`load_main` (the parent's ``__main__`` in a worker that is not its copy).
- Registration: ``hookimpl``, the registries its hooks fill, :data:`OWN_FATE_SHARING`.

The top-level ``spawnkit`` module is the user's API; these names are reachable there too,
for plugins written before this module existed.

Names load on first use: a worker that imports this module to call ``run_worker`` pays for
nothing else.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._child import run_worker
    from ._fresh import FreshInterpreterBackend
    from ._local import LocalBackend, LocalWorker
    from ._main import load_main, main_reference
    from ._protocols import Backend, ChildWatch, ParentWatch, ProcessHandle, WorkerHandle
    from ._registry import (
        OWN_FATE_SHARING,
        BackendInfo,
        BackendRegistry,
        WatchInfo,
        WatchRegistry,
    )
    from ._signals.threads import start_helper_thread
    from ._spec import (
        WorkerSpec,
        mark_helper_process,
        mark_parent_only,
        unmark_helper_process,
        unmark_parent_only,
    )
    from ._tree import signal_process_group
    from ._wire import Outcome, Report
    from ._worker import run_rank
    from .hookspecs import hookimpl


# Where each name lives: the one table, which spawnkit's top level reads too.
WHERE = {
    "Backend": "spawnkit._protocols",
    "BackendInfo": "spawnkit._registry",
    "BackendRegistry": "spawnkit._registry",
    "ChildWatch": "spawnkit._protocols",
    "FreshInterpreterBackend": "spawnkit._fresh",
    "LocalBackend": "spawnkit._local",
    "LocalWorker": "spawnkit._local",
    "OWN_FATE_SHARING": "spawnkit._registry",
    "Outcome": "spawnkit._wire",
    "ParentWatch": "spawnkit._protocols",
    "ProcessHandle": "spawnkit._protocols",
    "Report": "spawnkit._wire",
    "WatchInfo": "spawnkit._registry",
    "WatchRegistry": "spawnkit._registry",
    "WorkerHandle": "spawnkit._protocols",
    "WorkerSpec": "spawnkit._spec",
    "hookimpl": "spawnkit.hookspecs",
    "load_main": "spawnkit._main",
    "main_reference": "spawnkit._main",
    "mark_helper_process": "spawnkit._spec",
    "mark_parent_only": "spawnkit._spec",
    "run_rank": "spawnkit._worker",
    "run_worker": "spawnkit._child",
    "signal_process_group": "spawnkit._tree",
    "start_helper_thread": "spawnkit._signals.threads",
    "unmark_helper_process": "spawnkit._spec",
    "unmark_parent_only": "spawnkit._spec",
}

__all__ = [
    "OWN_FATE_SHARING",
    "Backend",
    "BackendInfo",
    "BackendRegistry",
    "ChildWatch",
    "FreshInterpreterBackend",
    "LocalBackend",
    "LocalWorker",
    "Outcome",
    "ParentWatch",
    "ProcessHandle",
    "Report",
    "WatchInfo",
    "WatchRegistry",
    "WorkerHandle",
    "WorkerSpec",
    "hookimpl",
    "load_main",
    "main_reference",
    "mark_helper_process",
    "mark_parent_only",
    "run_rank",
    "run_worker",
    "signal_process_group",
    "start_helper_thread",
    "unmark_helper_process",
    "unmark_parent_only",
]


def __getattr__(name: str) -> object:
    if name not in WHERE:
        raise AttributeError(f"module 'spawnkit.plugin' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
