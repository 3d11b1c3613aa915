"""The entry point spawnkit loads: registers ``relay`` as a remote backend with its own
fate-sharing (the host ends every rank once the job's socket closes)."""

from __future__ import annotations

import sys

from spawnkit import plugin


def _unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the host follows its ranks with pidfds, which only Linux has (not {sys.platform})"
    return None


def _factory() -> plugin.Backend:
    from .backend import RelayBackend

    return RelayBackend()


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        "relay",
        _factory,
        remote=True,
        watches="own",
        unavailable=_unavailable(),
        description="ranks forked by a host process that reports over a socket (a test fixture)",
    )
