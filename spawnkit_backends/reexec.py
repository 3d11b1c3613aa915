"""``subprocess``: every rank a fresh interpreter from ``subprocess.Popen``, no multiprocessing.

The backend is :class:`spawnkit_backends.FreshInterpreterBackend` as it is; a plugin that
starts interpreters with a twist subclasses the same class.
"""

from __future__ import annotations

from typing import final

from spawnkit import plugin

from ._fresh import FreshInterpreterBackend

__all__ = ["SubprocessBackend"]


@final
class SubprocessBackend(FreshInterpreterBackend):
    """The built-in ``subprocess`` backend: :class:`FreshInterpreterBackend` as it is."""

    name = "subprocess"


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        SubprocessBackend.name,
        SubprocessBackend,
        options=SubprocessBackend.OPTIONS,
        unavailable=SubprocessBackend.unavailable(),
        description="subprocess.Popen of a fresh interpreter: own executable, flags, env, cwd",
    )
