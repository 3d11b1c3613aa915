"""``subprocess``: every rank a fresh interpreter from ``subprocess.Popen``, no multiprocessing.

The backend is core's building block :class:`spawnkit.plugin.FreshInterpreterBackend` as it
is; a plugin that starts interpreters with a twist subclasses the same class.
"""

from __future__ import annotations

from typing import final

from spawnkit import plugin
from spawnkit._fresh import NAME, FreshInterpreterBackend, unavailable_reason

__all__ = ["SubprocessBackend"]


@final
class SubprocessBackend(FreshInterpreterBackend):
    """The built-in ``subprocess`` backend: :class:`FreshInterpreterBackend` as it is."""


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        NAME,
        SubprocessBackend,
        options=FreshInterpreterBackend.OPTIONS,
        unavailable=unavailable_reason(),
        description="subprocess.Popen of a fresh interpreter: own executable, flags, env, cwd",
    )
