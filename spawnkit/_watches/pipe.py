"""``pipe``: a lifeline pipe; the job holds the only write end, so end-of-file means it is gone.

Portable to every POSIX system and to every backend, since a descriptor can always be
forwarded. Its weak spot is a stray copy of the write end: it is recorded as parent-only
the moment it exists, so a fork child closes it before anything else, and it is never
inheritable across exec.
"""

from __future__ import annotations

import os
import sys

from .._spec import PARENT_ONLY_FDS
from . import fd_identity, start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec


def unavailable_reason() -> str | None:
    """Why this watch cannot run here, or ``None`` when it can."""
    if sys.platform == "win32":
        return "a lifeline descriptor cannot be handed to a Windows worker; use 'jobobject'"
    else:  # not a fall-through: mypy would call it unreachable on Windows
        return None


class PipeParent:
    """The job's side: one pipe per job, the read end forwarded to every rank."""

    def __init__(self) -> None:
        from .._fds import pipe

        self._read, self._write = pipe()
        # Recorded now rather than when the job launches: a fork from another thread in
        # between would otherwise copy the write end into a process that outlives this one.
        PARENT_ONLY_FDS.add(self._write)

    def child_watch(self) -> PipeChild:
        return PipeChild()

    def fds(self) -> tuple[int, ...]:
        return (self._read,)

    def private_fds(self) -> tuple[int, ...]:
        return (self._write,)

    def close(self) -> None:
        PARENT_ONLY_FDS.discard(self._write)
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


class PipeChild:
    """The worker's side: a daemon thread blocked in read() until end-of-file."""

    name = "pipe"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        (fd,) = fds
        armed = fd_identity(fd)
        # End-of-file is level-triggered: a job that died before this point is seen now.
        if _readable(fd) and _at_eof(fd):
            shutdown()
            return

        def wait() -> None:
            while True:
                # User code may close our descriptor, or put a file of its own under its
                # number: then keep watching another way.
                replaced = fd_identity(fd) != armed
                try:
                    if not replaced and _at_eof(fd):
                        shutdown()
                        return
                except OSError:
                    replaced = True
                if replaced:
                    from .poll import DEFAULT_INTERVAL, follow_parent_pid

                    follow_parent_pid(spec.parent_pid, DEFAULT_INTERVAL, shutdown, "pipe")
                    return

        start_thread(wait)


def _readable(fd: int) -> bool:
    """Whether a read from ``fd`` would not block."""
    if sys.platform == "win32":
        raise OSError(f"the pipe watch cannot run here: {unavailable_reason()}")
    else:  # noqa: RET506 - a platform branch type checkers understand
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))


def _at_eof(fd: int) -> bool:
    """Read (blocking) from the lifeline; ``True`` at end-of-file. Nobody writes to it."""
    while True:
        try:
            return not os.read(fd, 1)
        except InterruptedError:
            continue
