"""Registers core's own parent watches through the same hook a plugin would use.

``watch="auto"`` takes the available one with the highest priority: ``jobobject`` on
Windows, ``pidfd`` on Linux 5.3+ (``prctl`` on older kernels), ``kqueue`` on macOS and the
BSDs, ``pipe`` on any other POSIX system.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from .._registry import WatchRegistry


@hookimpl
def spawnkit_register_watches(registry: WatchRegistry) -> None:
    from . import jobobject, kqueue, none, pidfd, pipe, poll, prctl
    from ._passive import PassiveParent

    registry.add(
        "jobobject",
        jobobject.JobObjectParent,
        priority=50,
        unavailable=jobobject.unavailable_reason(),
        description="Windows: a kill-on-close job object; Windows ends workers and children",
    )
    registry.add(
        "pidfd",
        pidfd.PidfdParent,
        priority=40,
        unavailable=pidfd.unavailable_reason(),
        description="Linux 5.3+: workers poll a pidfd of the job's process",
    )
    registry.add(
        "kqueue",
        lambda: PassiveParent(kqueue.KqueueChild()),
        priority=35,
        unavailable=kqueue.unavailable_reason(),
        description="macOS/BSD: kqueue EVFILT_PROC NOTE_EXIT on the job's pid",
    )
    registry.add(
        "prctl",
        lambda: PassiveParent(prctl.PrctlChild()),
        priority=30,
        unavailable=prctl.unavailable_reason(),
        description="Linux: PR_SET_PDEATHSIG, a signal from the kernel when the parent exits",
    )
    registry.add(
        "pipe",
        pipe.PipeParent,
        priority=10,
        unavailable=pipe.unavailable_reason(),
        description="any POSIX system: end-of-file on a lifeline pipe",
    )
    registry.add(
        "poll",
        lambda: PassiveParent(poll.PollChild(poll.checked_interval())),
        priority=5,
        unavailable=poll.unavailable_reason(),
        description=f"any POSIX system: os.getppid() checked every "
        f"${poll.INTERVAL_ENV} s (default {poll.DEFAULT_INTERVAL})",
    )
    registry.add(
        "none",
        lambda: PassiveParent(none.NoWatch()),
        priority=-1,
        description="no watch: workers may be orphaned",
    )
