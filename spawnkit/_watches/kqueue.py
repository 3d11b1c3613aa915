"""``kqueue``: macOS and the BSDs; ``EVFILT_PROC``/``NOTE_EXIT`` on the job's pid.

The kernel reports the job's exit directly, whoever the worker's direct parent is (a fork
server included). A pid can be recycled, so registration is checked against
``os.getppid()`` too: a job that died before the worker armed is caught either way.
"""

from __future__ import annotations

import errno
import os
import sys

from . import start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec


def unavailable_reason() -> str | None:
    """Why this watch cannot run here, or ``None`` when it can."""
    import select

    if not hasattr(select, "kqueue") or not hasattr(select, "KQ_FILTER_PROC"):
        return f"kqueue with EVFILT_PROC exists on macOS and the BSDs, not on {sys.platform}"
    return None


class KqueueChild:
    """The worker's side: a daemon thread blocked in ``kevent()`` until the job exits."""

    name = "kqueue"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        if sys.platform == "linux" or sys.platform == "win32":
            raise OSError(f"the kqueue watch cannot run here: {unavailable_reason()}")
        else:  # noqa: RET506 - a platform branch type checkers understand
            _arm(spec, shutdown)


def _arm(spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
    if sys.platform != "linux" and sys.platform != "win32":
        import select

        assert spec.job_pid is not None  # a local worker's spec
        queue = select.kqueue()
        event = select.kevent(
            spec.job_pid,
            filter=select.KQ_FILTER_PROC,
            flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
            fflags=select.KQ_NOTE_EXIT,
        )
        try:
            queue.control([event], 0, 0)
        except OSError as exc:
            queue.close()
            if exc.errno != errno.ESRCH:
                raise
            shutdown()  # no such process: the job was gone before we could watch it
            return
        if os.getppid() != spec.parent_pid:
            # The parent died before or while we registered; the pid we registered may
            # already belong to a stranger, so this is the check that counts.
            queue.close()
            shutdown()
            return

        def wait() -> None:
            while True:
                try:
                    events = queue.control(None, 1, None)
                except InterruptedError:
                    continue
                if any(e.fflags & select.KQ_NOTE_EXIT for e in events):
                    break
            queue.close()
            shutdown()

        start_thread(wait)
