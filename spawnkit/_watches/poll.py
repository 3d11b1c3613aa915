"""``poll``: compare ``os.getppid()`` with the parent pid recorded before the start, at an interval.

Works wherever a dead parent's children are handed to another process (every POSIX system),
for every backend, with nothing to forward. Its cost is latency: up to one interval. Under
a fork server the direct parent is the server, which exits when its job does.
"""

from __future__ import annotations

import os
import sys
import time

from . import start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec

INTERVAL_ENV = "SPAWNKIT_POLL_INTERVAL"
DEFAULT_INTERVAL = 0.1


def unavailable_reason() -> str | None:
    """Why this watch cannot run here, or ``None`` when it can."""
    if sys.platform == "win32":
        # Windows never re-parents an orphan: getppid() keeps naming the dead parent.
        return "on Windows os.getppid() keeps returning a dead parent's pid; use 'jobobject'"
    else:  # not a fall-through: mypy would call it unreachable on Windows
        return None


def _interval_from_env() -> float:
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        return float(text)
    except ValueError:
        from .._errors import ConfigError

        raise ConfigError(
            f"{INTERVAL_ENV}={text!r} is not a number; set it to the seconds between two "
            f"checks of the parent, e.g. {INTERVAL_ENV}=0.05, or unset it for "
            f"{DEFAULT_INTERVAL}"
        ) from None


def checked_interval(interval: float | None = None) -> float:
    """The poll interval: ``interval``, else ``$SPAWNKIT_POLL_INTERVAL``, else 0.1 seconds."""
    value = _interval_from_env() if interval is None else interval
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        from .._errors import ConfigError

        raise ConfigError(
            f"the poll watch's interval must be a number of seconds > 0, not {value!r}; "
            f"pass a positive float or set {INTERVAL_ENV}"
        )
    return float(value)


class PollChild:
    """The worker's side: a daemon thread that checks the parent pid every interval."""

    name = "poll"

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        if os.getppid() != spec.parent_pid:
            shutdown()
            return
        follow_parent_pid(spec.parent_pid, self.interval, shutdown, "poll")


def follow_parent_pid(
    parent_pid: int | None, interval: float, shutdown: Callable[[], None], name: str
) -> None:
    """Call ``shutdown()`` from a daemon thread once this process's parent is not ``parent_pid``.

    Also the fallback of the descriptor-based watches when their descriptor is taken away.
    """

    def wait() -> None:
        # The parent pid recorded before the start, never 1: a subreaper or a container's
        # init adopts orphans under any pid.
        while os.getppid() == parent_pid:
            time.sleep(interval)
        shutdown()

    start_thread(wait)
