"""The hooks a plugin implements, and the markers for implementing them.

A plugin is any module or object named by an entry point in the ``spawnkit`` group::

    [project.entry-points.spawnkit]
    mybackend = "spawnkit_mybackend"

with a function marked ``@spawnkit.hookimpl`` for one or both hooks below. spawnkit loads
plugins lazily, once, in the parent only; workers never import pluggy. Each hook runs as one
pluggy call over all plugins (``tryfirst``, ``trylast`` and wrappers work); a hook that raises
is reported as a broken plugin, and the others still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._registry import BackendRegistry, WatchRegistry

__all__ = ["hookimpl", "hookspec", "spawnkit_register_backends", "spawnkit_register_watches"]

PROJECT = "spawnkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def spawnkit_register_backends(registry: BackendRegistry) -> None:
    """Called once, the first time spawnkit needs its backends, in the parent process.

    Add every backend the plugin provides with ``registry.add(name, factory, ...)``. Add a
    backend that cannot run on this platform too, with ``unavailable="why"``, so users get
    the reason instead of "unknown backend". Do no work here beyond registering: import
    heavy modules inside the factory.
    """


@hookspec
def spawnkit_register_watches(registry: WatchRegistry) -> None:
    """Called once, the first time spawnkit needs its parent watches, in the parent process.

    Add every parent-death watch the plugin provides with ``registry.add(name, factory,
    priority=..., unavailable=...)``; ``watch="auto"`` picks the available watch with the
    highest priority.
    """
