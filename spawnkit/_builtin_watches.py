"""Registers core's own parent watches through the same hook a plugin would use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from ._registry import WatchRegistry


@hookimpl
def spawnkit_register_watches(registry: WatchRegistry) -> None:
    from ._watches import none, pidfd, pipe

    registry.add(
        "pidfd",
        pidfd.PidfdParent,
        priority=40,
        unavailable=pidfd.unavailable_reason(),
        description="Linux 5.3+: workers poll a pidfd of the job's process",
    )
    registry.add(
        "pipe",
        pipe.PipeParent,
        priority=10,
        description="any POSIX system: end-of-file on a lifeline pipe",
    )
    registry.add("none", none.NoWatch, priority=-1, description="no watch")
