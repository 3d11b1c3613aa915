"""Waiting for a job: the one loop every wait goes through, and the pipe that wakes it."""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.connection import wait as _wait_ready
from typing import TYPE_CHECKING, final

from . import _fds
from ._spec import PARENT_ONLY_FDS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Waiter"]

# One wait is at most a day: the OS rejects longer ones, and a longer wait is more of these.
_LONGEST_WAIT = 86400.0


@final
class Waiter:
    """Waits on the ranks' descriptors and a wake pipe, under the job's lock between waits.

    The pipe is written to wake a wait blocked in another thread: by ``terminate()``, by a
    backend's ``notify``, and by the foreground signal handler, which must not raise inside
    the job's bookkeeping but have it raise at a safe point instead.
    """

    def __init__(self, lock: threading.RLock, look: Callable[[], Sequence[int]]) -> None:
        # look(), under the lock before every wait: takes the ranks' news, and gives the
        # descriptors that may bring more.
        self._lock = lock
        self._look = look
        self._read, self._write = _fds.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        PARENT_ONLY_FDS.update((self._read, self._write))
        # Reentrant: the signal handler's wake() may run in a thread that holds it. Once
        # closed, the pipe's numbers may name the program's next files: nothing may be
        # written to them then.
        self._pipe_lock = threading.RLock()
        self._open = True
        self._extra: list[int] = []  # more pipes that wake the wait (signal wakeup fd)

    def wake(self) -> None:
        with self._pipe_lock:
            if not self._open:
                return
            try:
                os.write(self._write, b"!")
            except OSError:  # full: it is awake anyway
                pass

    def add_fd(self, fd: int) -> None:
        with self._pipe_lock:
            self._extra.append(fd)

    def remove_fd(self, fd: int) -> None:
        with self._pipe_lock:
            self._extra.remove(fd)

    def until(
        self,
        done: Callable[[], bool],
        deadline: float | None,
        wake_at: Callable[[], float | None] | None = None,
    ) -> bool:
        """Whether ``done()`` (asked under the lock after every event) came true by ``deadline``.

        Blocks without the lock (unless the caller holds it): ``terminate()`` from another
        thread is never held up. ``wake_at()``, asked after ``done()``, is a time at which
        to ask ``done()`` again though nothing happened (a restart's start).
        """
        while True:
            with self._lock:
                waitables = list(self._look())
                if done():
                    return True
                alarm = None if wake_at is None else wake_at()
                with self._pipe_lock:
                    if self._open:
                        waitables += [self._read, *self._extra]
            now = time.monotonic()
            timeout = None
            if deadline is not None:
                timeout = min(deadline - now, _LONGEST_WAIT)
                if timeout <= 0:
                    return False
            if alarm is not None:
                timeout = max(0.0, min(alarm - now, _LONGEST_WAIT if timeout is None else timeout))
            _wait_ready(waitables, timeout)
            with self._pipe_lock:
                for fd in (self._read, *self._extra) if self._open else ():
                    try:
                        while os.read(fd, 512):
                            pass
                    except OSError:
                        pass

    def close(self) -> None:
        with self._pipe_lock:
            self._open = False
            for fd in (self._read, self._write):
                PARENT_ONLY_FDS.discard(fd)
                os.close(fd)

    def forget_in_fork(self) -> None:
        # In a fork of the job's process the descriptors are closed already (they are
        # parent-only): nothing may read, write or close their numbers again.
        self._open = False
