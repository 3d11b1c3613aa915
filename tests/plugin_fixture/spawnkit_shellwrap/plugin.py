"""The entry point spawnkit loads: registers the ``shellwrap`` backend, importing nothing heavy."""

from __future__ import annotations

import os

from spawnkit import plugin

SHELL = "/bin/sh"


def _unavailable() -> str | None:
    if os.name != "posix":
        return f"needs a POSIX system with {SHELL} (this is {os.name!r})"
    if not os.access(SHELL, os.X_OK):
        return f"{SHELL} is missing or not executable"
    return None


def _factory(shell: str = SHELL) -> plugin.Backend:
    from .backend import ShellWrapBackend

    return ShellWrapBackend(shell=shell)


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        "shellwrap",
        _factory,
        options=["shell"],
        unavailable=_unavailable(),
        description="each rank exec'd by a POSIX shell, tagged SPAWNKIT_SHELLWRAP_RANK",
    )
