"""What a backend or parent-watch plugin builds on: ``from spawnkit import plugin``.

- Registration: :data:`hookimpl` and the registries its hooks fill, :class:`BackendRegistry`
  and :class:`WatchRegistry`.
- Any backend: the contracts :class:`Backend` and :class:`WorkerHandle`, :class:`WorkerSpec`
  (core to worker), :class:`Report` (what :func:`run_rank` returns) and :class:`Outcome`
  (how a rank ended, handle to core).
- A local process per rank: :class:`LocalBackend` (implement ``start_process`` returning a
  :class:`ProcessHandle`) and :func:`run_worker`, the worker's first call;
  :func:`main_reference` with :func:`load_main` bring the parent's ``__main__`` to a worker
  that is not its copy. A new interpreter per rank, started with a twist, subclasses
  ``spawnkit_backends.FreshInterpreterBackend``, the built-in ``subprocess`` backend.
- The job's side of a local backend: :func:`start_helper_thread` (threads that take no
  signals), :func:`mark_parent_only` / :func:`unmark_parent_only` (descriptors every fork
  of this process closes), :func:`mark_helper_process` / :func:`unmark_helper_process`
  (a server kept across jobs, not a worker).
- Parent watches: :class:`ParentWatch` and :class:`ChildWatch`.

``docs/plugins.md`` describes exactly these names. Names load on first use: a worker that
imports this module to call ``run_worker`` pays for nothing else.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._child import run_worker
    from ._local import LocalBackend
    from ._main import load_main, main_reference
    from ._protocols import Backend, ChildWatch, ParentWatch, ProcessHandle, WorkerHandle
    from ._signals.threads import start_helper_thread
    from ._spec import (
        WorkerSpec,
        mark_helper_process,
        mark_parent_only,
        unmark_helper_process,
        unmark_parent_only,
    )
    from ._tree import signal_process_group as signal_process_group  # noqa: PLC0414 - deprecated, typed while it lasts
    from ._wire import Outcome, Report
    from ._worker import run_rank
    from .hookspecs import OWN_FATE_SHARING as OWN_FATE_SHARING  # noqa: PLC0414 - deprecated, typed while it lasts
    from .hookspecs import BackendRegistry, WatchRegistry, hookimpl

# Where each public name lives: the one table, which spawnkit's top level reads too.
WHERE = {
    "Backend": "spawnkit._protocols",
    "BackendRegistry": "spawnkit.hookspecs",
    "ChildWatch": "spawnkit._protocols",
    "LocalBackend": "spawnkit._local",
    "Outcome": "spawnkit._wire",
    "ParentWatch": "spawnkit._protocols",
    "ProcessHandle": "spawnkit._protocols",
    "Report": "spawnkit._wire",
    "WatchRegistry": "spawnkit.hookspecs",
    "WorkerHandle": "spawnkit._protocols",
    "WorkerSpec": "spawnkit._spec",
    "hookimpl": "spawnkit.hookspecs",
    "load_main": "spawnkit._main",
    "main_reference": "spawnkit._main",
    "mark_helper_process": "spawnkit._spec",
    "mark_parent_only": "spawnkit._spec",
    "run_rank": "spawnkit._worker",
    "run_worker": "spawnkit._child",
    "start_helper_thread": "spawnkit._signals.threads",
    "unmark_helper_process": "spawnkit._spec",
    "unmark_parent_only": "spawnkit._spec",
}

# Names of the plugin API before it was narrowed: importable for one more release, with a
# DeprecationWarning that names the replacement. (Where they live, what to use instead.)
DEPRECATED = {
    "FreshInterpreterBackend": (
        "spawnkit_backends",
        "import it from spawnkit_backends, beside the built-in backend it is",
    ),
    "OWN_FATE_SHARING": (
        "spawnkit.hookspecs",
        "pass watches='own' to registry.add(); the constant is that string",
    ),
    "signal_process_group": (
        "spawnkit._tree",
        "a LocalBackend's worker is stopped by core; a remote handle stops its own in stop()",
    ),
}

__all__ = [
    "Backend",
    "BackendRegistry",
    "ChildWatch",
    "LocalBackend",
    "Outcome",
    "ParentWatch",
    "ProcessHandle",
    "Report",
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
    "start_helper_thread",
    "unmark_helper_process",
    "unmark_parent_only",
]


def deprecated(name: str, where: str) -> object:
    """``name`` of the old plugin API, with a warning that says what to use instead."""
    import importlib
    import warnings

    module, instead = DEPRECATED[name]
    warnings.warn(
        f"{where}.{name} is deprecated and goes in the next release: {instead}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> object:
    if name in DEPRECATED:
        return deprecated(name, "spawnkit.plugin")  # not cached: it warns at every use
    if name not in WHERE:
        raise AttributeError(f"module 'spawnkit.plugin' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
