"""Core's own parent watches as plugins: each entry point in pyproject.toml names one here.

They load, list and block (``SPAWNKIT_DISABLE_PLUGINS=poll``) as any plugin's watches do, and
live apart from the watch modules because a worker imports those to arm its half and must not
import pluggy with them. ``watch="auto"`` takes the available one with the highest priority:
``jobobject`` on Windows, ``pidfd`` on Linux 5.3+ (``prctl`` on older kernels), ``kqueue`` on
macOS and the BSDs, ``pipe`` on any other POSIX system.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ..hookspecs import WatchRegistry, hookimpl
from . import jobobject, kqueue, none, pidfd, pipe, poll, prctl
from ._passive import PassiveParent

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._protocols import ParentWatch


@final
class BuiltinWatch:
    """One built-in watch, as the plugin object its entry point names."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], ParentWatch],
        priority: int,
        unavailable: Callable[[], str | None],
        description: str,
    ) -> None:
        self._name, self._factory, self._priority = name, factory, priority
        self._unavailable, self._description = unavailable, description

    @hookimpl
    def spawnkit_register_watches(self, registry: WatchRegistry) -> None:
        registry.add(
            self._name,
            self._factory,
            priority=self._priority,
            unavailable=self._unavailable(),
            description=self._description,
        )


JOBOBJECT = BuiltinWatch(
    "jobobject",
    jobobject.JobObjectParent,
    50,
    jobobject.unavailable_reason,
    "Windows: a kill-on-close job object; Windows ends workers and children",
)
PIDFD = BuiltinWatch(
    "pidfd",
    pidfd.PidfdParent,
    40,
    pidfd.unavailable_reason,
    "Linux 5.3+: workers poll a pidfd of the job's process",
)
KQUEUE = BuiltinWatch(
    "kqueue",
    lambda: PassiveParent(kqueue.KqueueChild()),
    35,
    kqueue.unavailable_reason,
    "macOS/BSD: kqueue EVFILT_PROC NOTE_EXIT on the job's pid",
)
PRCTL = BuiltinWatch(
    "prctl",
    lambda: PassiveParent(prctl.PrctlChild()),
    30,
    prctl.unavailable_reason,
    "Linux: PR_SET_PDEATHSIG, a signal from the kernel when the parent exits",
)
PIPE = BuiltinWatch(
    "pipe",
    pipe.PipeParent,
    10,
    pipe.unavailable_reason,
    "any POSIX system: end-of-file on a lifeline pipe",
)
POLL = BuiltinWatch(
    "poll",
    lambda: PassiveParent(poll.PollChild(poll.checked_interval())),
    5,
    poll.unavailable_reason,
    f"any POSIX system: os.getppid() checked every ${poll.INTERVAL_ENV} s "
    f"(default {poll.DEFAULT_INTERVAL})",
)
NONE = BuiltinWatch(
    "none",
    lambda: PassiveParent(none.NoWatch()),
    -1,
    lambda: None,
    "no watch: workers may be orphaned",
)
