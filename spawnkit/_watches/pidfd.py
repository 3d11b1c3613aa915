"""``pidfd``: Linux 5.3+; the job opens a pidfd of itself and every worker polls it.

A pidfd names one process for good, so a recycled pid can never fool it, and it works
whoever the worker's direct parent is (a fork server included).
"""

from __future__ import annotations

import os
import sys

from . import fd_identity, start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec


def unavailable_reason() -> str | None:
    """Why this watch cannot run here, or ``None`` when it can."""
    if not hasattr(os, "pidfd_open"):
        return "os.pidfd_open is missing (Linux 5.3+ with Python 3.9+ only)"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as exc:
        return f"pidfd_open() failed: {exc}"
    return None


def _not_here() -> OSError:
    return OSError(f"the pidfd watch cannot run here: {unavailable_reason()}")


# What calls Linux-only names sits under `sys.platform == "linux"`, so type checkers on
# other platforms skip it instead of reporting names their stubs lack.


class PidfdParent:
    """The job's side: a pidfd that refers to the job's own process."""

    _fd: int

    def __init__(self) -> None:
        if sys.platform == "linux":
            from .._fds import above_stdio

            self._fd = above_stdio(os.pidfd_open(os.getpid()))
        else:
            raise _not_here()

    def child_watch(self) -> PidfdChild:
        return PidfdChild()

    def fds(self) -> tuple[int, ...]:
        return (self._fd,)

    def private_fds(self) -> tuple[int, ...]:
        return ()

    def close(self) -> None:
        os.close(self._fd)


class PidfdChild:
    """The worker's side: a daemon thread in poll() until the pidfd turns readable."""

    name = "pidfd"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        if sys.platform != "linux":
            raise _not_here()
        else:  # noqa: RET506 - a platform branch type checkers understand
            import select

            (fd,) = fds
            armed = fd_identity(fd)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            # Readable from the job's exit on, for good: a job that died before this point is
            # seen by this first look.
            ready = poller.poll(0)
            if ready:
                _ended(ready, fd, armed, spec, shutdown)
                return

            def wait() -> None:
                while True:
                    try:
                        events = poller.poll()
                    except InterruptedError:
                        continue
                    if events:
                        _ended(events, fd, armed, spec, shutdown)
                        return

            start_thread(wait)


def _ended(
    events: list[tuple[int, int]],
    fd: int,
    armed: tuple[int, int] | None,
    spec: WorkerSpec,
    shutdown: Callable[[], None],
) -> None:
    if sys.platform != "linux":
        raise _not_here()
    else:  # noqa: RET506 - a platform branch type checkers understand
        import select

        if any(mask & select.POLLNVAL for _, mask in events) or fd_identity(fd) != armed:
            # User code closed our descriptor, or put a file of its own under its number:
            # that says nothing about the job. Keep watching another way.
            from .poll import DEFAULT_INTERVAL, follow_parent_pid

            follow_parent_pid(spec.parent_pid, DEFAULT_INTERVAL, shutdown, "pidfd")
            return
        shutdown()
