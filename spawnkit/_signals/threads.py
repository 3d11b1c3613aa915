"""Helper threads that never take a signal meant for the program.

The kernel hands a process-directed signal (SIGTERM, SIGINT) to any thread that does not
block it. Python runs the handler in the main thread only, but a main thread blocked in a
system call wakes only if the signal lands on it: a SIGTERM caught by a helper thread
would leave ``signal.pause()`` or ``select()`` asleep, and ``Terminated`` would never be
raised. So every thread spawnkit starts blocks every signal it can; a new thread takes the
mask of its creator, so the mask is set around the start and restored at once. Writes to a
closed pipe from such a thread fail with EPIPE instead of killing the process by SIGPIPE.
"""

from __future__ import annotations

import _thread
import sys

from . import mask

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

__all__ = ["start_helper_thread", "start_thread"]


def _started(start: Callable[[], Any]) -> Any:
    if sys.platform == "win32":  # no per-thread masks, no SIGTERM
        return start()
    else:  # not a fall-through: mypy would call it unreachable on Windows
        previous = mask.block(mask.ALL)
        try:
            return start()
        finally:
            mask.set_mask(previous)


def start_thread(run: Callable[..., object], *args: object) -> None:
    """Run ``run(*args)`` in a daemon thread that takes no signals.

    A bare ``_thread``, lighter than ``threading.Thread``, but like it, this returns only
    once the new thread runs: a thread that the system schedules late could otherwise
    begin its bootstrap while the interpreter is being finalized (a rank that returns at
    once) and crash the process with SIGSEGV.
    """
    running = _thread.allocate_lock()
    running.acquire()

    def bootstrap() -> None:
        running.release()
        run(*args)

    _started(lambda: _thread.start_new_thread(bootstrap, ()))
    running.acquire()


def start_helper_thread(
    run: Callable[..., object], *args: object, name: str | None = None
) -> threading.Thread:
    """Start ``run(*args)`` in a daemon ``threading.Thread`` that takes no signals.

    For a backend's own threads (writers, waiters, relays) in the job's process: a signal
    to the program must reach its main thread, and a write to a pipe whose reader died must
    fail with ``EPIPE`` rather than kill the program by SIGPIPE.
    """
    import threading

    thread = threading.Thread(target=run, args=args, name=name, daemon=True)
    _started(thread.start)
    return thread
