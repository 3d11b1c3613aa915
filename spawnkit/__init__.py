"""Run a function in N worker processes and treat them as one job.

``spawnkit.spawn(fn, args=(), nprocs=N)`` is a drop-in for ``torch.multiprocessing.spawn``
without torch, with pluggable backends. Names are imported on first use, so a worker that
imports ``spawnkit`` pays only for what it touches.
"""

from __future__ import annotations

import importlib

__all__ = [
    "ENV_VAR_PARALLEL_START",
    "Backend",
    "BackendInfo",
    "BackendRegistry",
    "BackendUnavailableError",
    "ChildWatch",
    "ConfigError",
    "InvalidArgumentError",
    "JobTerminatedError",
    "LaunchError",
    "NotPicklableError",
    "ParentWatch",
    "PluginError",
    "ProcessContext",
    "ProcessException",
    "ProcessExitedException",
    "ProcessRaisedException",
    "RemoteTraceback",
    "SpawnContext",
    "SpawnError",
    "Terminated",
    "UnknownBackendError",
    "UnknownOptionError",
    "UnknownWatchError",
    "WatchInfo",
    "WatchRegistry",
    "WatchUnavailableError",
    "WorkerHandle",
    "WorkerSpec",
    "__version__",
    "available_backends",
    "available_watches",
    "hookimpl",
    "run_worker",
    "signal_process_group",
    "spawn",
    "start_helper_thread",
    "start_processes",
]

_ERRORS = "spawnkit._errors"
_WHERE = {
    "ENV_VAR_PARALLEL_START": "spawnkit._api",
    "Backend": "spawnkit._protocols",
    "BackendInfo": "spawnkit._registry",
    "BackendRegistry": "spawnkit._registry",
    "BackendUnavailableError": _ERRORS,
    "ChildWatch": "spawnkit._protocols",
    "ConfigError": _ERRORS,
    "InvalidArgumentError": _ERRORS,
    "JobTerminatedError": _ERRORS,
    "LaunchError": _ERRORS,
    "NotPicklableError": _ERRORS,
    "ParentWatch": "spawnkit._protocols",
    "PluginError": _ERRORS,
    "ProcessContext": "spawnkit._context",
    "ProcessException": _ERRORS,
    "ProcessExitedException": _ERRORS,
    "ProcessRaisedException": _ERRORS,
    "RemoteTraceback": _ERRORS,
    "SpawnContext": "spawnkit._protocols",
    "SpawnError": _ERRORS,
    "Terminated": "spawnkit._child",
    "UnknownBackendError": _ERRORS,
    "UnknownOptionError": _ERRORS,
    "UnknownWatchError": _ERRORS,
    "WatchInfo": "spawnkit._registry",
    "WatchRegistry": "spawnkit._registry",
    "WatchUnavailableError": _ERRORS,
    "WorkerHandle": "spawnkit._protocols",
    "WorkerSpec": "spawnkit._spec",
    "available_backends": "spawnkit._api",
    "available_watches": "spawnkit._api",
    "hookimpl": "spawnkit.hookspecs",
    "run_worker": "spawnkit._child",
    "signal_process_group": "spawnkit._tree",
    "spawn": "spawnkit._api",
    "start_helper_thread": "spawnkit._threads",
    "start_processes": "spawnkit._api",
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._api import (
        ENV_VAR_PARALLEL_START,
        available_backends,
        available_watches,
        spawn,
        start_processes,
    )
    from ._child import Terminated, run_worker
    from ._context import ProcessContext
    from ._errors import (
        BackendUnavailableError,
        ConfigError,
        InvalidArgumentError,
        JobTerminatedError,
        LaunchError,
        NotPicklableError,
        PluginError,
        ProcessException,
        ProcessExitedException,
        ProcessRaisedException,
        RemoteTraceback,
        SpawnError,
        UnknownBackendError,
        UnknownOptionError,
        UnknownWatchError,
        WatchUnavailableError,
    )
    from ._protocols import Backend, ChildWatch, ParentWatch, SpawnContext, WorkerHandle
    from ._registry import BackendInfo, BackendRegistry, WatchInfo, WatchRegistry
    from ._spec import WorkerSpec
    from ._threads import start_helper_thread
    from ._tree import signal_process_group
    from .hookspecs import hookimpl

    __version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value: object = version("spawnkit")
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        # torch.multiprocessing re-exports multiprocessing (get_context, SimpleQueue...),
        # and code ported by swapping the import uses those names through it.
        import multiprocessing

        if name not in multiprocessing.__all__:
            raise AttributeError(f"module 'spawnkit' has no attribute {name!r}")
        value = getattr(multiprocessing, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
