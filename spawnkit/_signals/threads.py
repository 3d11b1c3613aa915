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
import os
import sys
import time

from . import mask

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

__all__ = ["start_helper_thread", "start_thread", "wait_running"]


def _unsignalled(call: Callable[[], Any]) -> Any:
    """``call()`` with every signal held; those that came meanwhile are delivered after."""
    if sys.platform == "win32":  # no per-thread masks, no SIGTERM
        return call()
    else:  # not a fall-through: mypy would call it unreachable on Windows
        previous = mask.block(mask.ALL)
        try:
            return call()
        finally:
            mask.set_mask(previous)


# A helper thread that has not run yet when the process ends: one scheduled late, on a busy
# machine, after its rank returned at once. Past this the process ends anyway.
RUNNING_WAIT = 10.0

# The threads start_thread() started in process _starting_in that may not run yet, as the
# locks they release first thing; a fork starts with none of them.
_starting: list[Any] = []
_starting_in = 0


def start_thread(run: Callable[..., object], *args: object) -> None:
    """Run ``run(*args)`` in a daemon thread that takes no signals.

    A bare ``_thread``, lighter than ``threading.Thread``, and unlike it, this returns at
    once: the thread runs when the system schedules it (which can take a millisecond on
    a busy machine), while the rank's start goes on; :func:`wait_running` waits for it
    before the process ends (and on Python 3.14+, just before ``fn``). Whatever it is for
    must therefore wait for it: a byte in a pipe, a readable descriptor, a pending blocked
    signal.
    """
    global _starting_in
    running = _thread.allocate_lock()
    running.acquire()

    def bootstrap() -> None:
        running.release()
        run(*args)

    _unsignalled(lambda: _thread.start_new_thread(bootstrap, ()))
    pid = os.getpid()
    if _starting_in != pid:
        _starting.clear()
        _starting_in = pid
    _starting.append(running)


def wait_running() -> None:
    """Return once every thread :func:`start_thread` started in this process has run.

    Before ``fn`` on Python 3.14+: a thread is listed before it runs, and faulthandler stops
    its dump at such a thread, so a crash in ``fn``'s first instant would show none of its
    frames. Before the process ends: a thread that began its bootstrap while the
    interpreter is being finalized would crash the process with SIGSEGV. Bounded by
    :data:`RUNNING_WAIT`.
    """
    if _starting_in != os.getpid() or not _starting:
        return
    # Not cut short by what a signal's handler raises (Terminated, before fn): a thread
    # left unwaited for could begin its bootstrap as the interpreter finalizes.
    _unsignalled(_wait_running)


def _wait_running() -> None:
    deadline = time.monotonic() + RUNNING_WAIT
    while _starting:
        _starting.pop().acquire(timeout=max(deadline - time.monotonic(), 0))


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
    _unsignalled(thread.start)
    return thread
