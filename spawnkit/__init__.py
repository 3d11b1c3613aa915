"""Run a function in N worker processes and treat them as one job.

``spawnkit.spawn(fn, args=(), nprocs=N)`` is a drop-in for ``torch.multiprocessing.spawn``
without torch, with pluggable backends. This module is the user's API; plugin authors build
on :mod:`spawnkit.plugin`. Names are imported on first use, so a worker that imports
``spawnkit`` pays only for what it touches.
"""

from __future__ import annotations

import importlib

__all__ = [
    "ENV_VAR_PARALLEL_START",
    "BackendUnavailableError",
    "ConfigError",
    "InvalidArgumentError",
    "JobReport",
    "JobTerminatedError",
    "LaunchError",
    "NotPicklableError",
    "PluginError",
    "ProcessContext",
    "ProcessException",
    "ProcessExitedException",
    "ProcessRaisedException",
    "RankReport",
    "RemoteTraceback",
    "SpawnContext",
    "SpawnError",
    "SpawnTimeoutError",
    "StopError",
    "Terminated",
    "TorchSwitch",
    "UnknownBackendError",
    "UnknownOptionError",
    "UnknownWatchError",
    "WatchUnavailableError",
    "__version__",
    "available_backends",
    "available_watches",
    "spawn",
    "start_processes",
    "use_for_torch",
]

# The plugin API lives in spawnkit.plugin. ``hookimpl`` stays here too (the marker plugins
# write as ``@spawnkit.hookimpl``); the other names, reachable here before spawnkit.plugin
# existed, warn for one more release.
_OLD_PLUGIN_NAMES = frozenset(
    {
        "Backend",
        "BackendRegistry",
        "ChildWatch",
        "ParentWatch",
        "WatchRegistry",
        "WorkerHandle",
        "WorkerSpec",
        "mark_parent_only",
        "run_worker",
        "signal_process_group",
        "start_helper_thread",
        "unmark_parent_only",
    }
)
# Where each name of __all__ lives; the rest are exceptions, from spawnkit._errors.
_WHERE = {
    "ENV_VAR_PARALLEL_START": "spawnkit._api",
    "JobReport": "spawnkit._report",
    "ProcessContext": "spawnkit._context",
    "RankReport": "spawnkit._report",
    "SpawnContext": "spawnkit._protocols",
    "Terminated": "spawnkit._signals.sigterm",
    "TorchSwitch": "spawnkit._torch_switch",
    "available_backends": "spawnkit._api",
    "available_watches": "spawnkit._api",
    "spawn": "spawnkit._api",
    "start_processes": "spawnkit._api",
    "use_for_torch": "spawnkit._torch_switch",
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
        SpawnTimeoutError,
        StopError,
        UnknownBackendError,
        UnknownOptionError,
        UnknownWatchError,
        WatchUnavailableError,
    )
    from ._protocols import SpawnContext
    from ._report import JobReport, RankReport
    from ._signals.sigterm import Terminated
    from ._torch_switch import TorchSwitch, use_for_torch
    from ._tree import signal_process_group as signal_process_group
    from .hookspecs import hookimpl as hookimpl

    # Deprecated here (see _OLD_PLUGIN_NAMES), still typed while they last.
    from .plugin import Backend as Backend
    from .plugin import BackendRegistry as BackendRegistry
    from .plugin import ChildWatch as ChildWatch
    from .plugin import ParentWatch as ParentWatch
    from .plugin import WatchRegistry as WatchRegistry
    from .plugin import WorkerHandle as WorkerHandle
    from .plugin import WorkerSpec as WorkerSpec
    from .plugin import mark_parent_only as mark_parent_only
    from .plugin import run_worker as run_worker
    from .plugin import start_helper_thread as start_helper_thread
    from .plugin import unmark_parent_only as unmark_parent_only

    __version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value: object = version("spawnkit")
    elif name in __all__:
        value = getattr(importlib.import_module(_WHERE.get(name, "spawnkit._errors")), name)
    elif name == "hookimpl":
        from .hookspecs import hookimpl as value
    elif name in _OLD_PLUGIN_NAMES:
        from . import plugin

        if name in plugin.DEPRECATED:
            return plugin.deprecated(name, "spawnkit")
        import warnings

        warnings.warn(
            f"spawnkit.{name} is deprecated and goes in the next release: use "
            f"spawnkit.plugin.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(plugin, name)  # not cached: it warns at every use
    elif name.startswith("_"):
        # A submodule not imported yet: `from . import _launch` asks here first, and must
        # not pay for importing multiprocessing to be told no.
        raise AttributeError(f"module 'spawnkit' has no attribute {name!r}")
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
