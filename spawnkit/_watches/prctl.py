"""``prctl``: Linux ``PR_SET_PDEATHSIG`` through ctypes; the kernel signals the worker itself.

The kernel sends the signal when the *thread* that started the worker exits, not only when
its process does: a job that spawns from a short-lived thread would otherwise lose healthy
workers. So the signal is a private real-time one, consumed by a watch thread with
``sigwait()``, and it only counts once ``os.getppid()`` no longer names the parent recorded
before the start (after a thread's exit the worker is handed to another thread of the same
process, whose pid is the same). Under a fork server the direct parent is the server, which
exits when its job does.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .._signals import mask
from . import start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec

PR_SET_PDEATHSIG = 1


def death_signal() -> int:
    """The signal the kernel sends: ``SIGRTMAX - 3``, a real-time signal nothing else uses."""
    if sys.platform == "linux":
        return int(signal.SIGRTMAX) - 3
    else:
        raise OSError(f"PR_SET_PDEATHSIG exists only on Linux, not on {sys.platform}")


def unavailable_reason() -> str | None:
    """Why this watch cannot run here, or ``None`` when it can."""
    if not sys.platform.startswith("linux"):
        return f"PR_SET_PDEATHSIG exists only on Linux, not on {sys.platform}"
    elif not all(hasattr(signal, n) for n in ("SIGRTMAX", "sigwait", "pthread_sigmask")):
        return "this Python has no real-time signals or sigwait()"
    else:  # in the else, so that type checkers skip it off Linux
        try:
            _prctl()
        except (OSError, AttributeError) as exc:
            return f"cannot reach prctl() in the C library through ctypes: {exc}"
        return None


def _prctl() -> Callable[..., int]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    # Declared variadic in C; every argument after the first is an unsigned long.
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    return prctl


class PrctlChild:
    """The worker's side: ``PR_SET_PDEATHSIG`` plus a thread in ``sigwait()``."""

    name = "prctl"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        if sys.platform != "linux":
            raise OSError(f"the prctl watch cannot run here: {unavailable_reason()}")
        else:  # noqa: RET506 - a platform branch type checkers understand
            import ctypes
            import threading

            signum = death_signal()
            parent = spec.parent_pid
            if threading.current_thread() is not threading.main_thread():
                # Neither the mask nor a handler could cover the main thread, where the signal's
                # default action (terminate) would strike at a mere thread exit: follow the pid.
                from .poll import DEFAULT_INTERVAL, follow_parent_pid

                if os.getppid() != parent:
                    shutdown()
                    return
                follow_parent_pid(parent, DEFAULT_INTERVAL, shutdown, "prctl")
                return

            def check(*_: object) -> None:
                if os.getppid() != parent:
                    shutdown()

            # Blocked in this (the main) thread before the watch thread exists, so every thread
            # started from here on blocks it too and only sigwait() below ever takes it.
            mask.block({signum})
            # A thread that was running before arming does not block it; if the kernel picks
            # that one, this handler runs instead of the default action (terminate).
            signal.signal(signum, check)
            if _prctl()(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")

            def wait() -> None:
                while os.getppid() == parent:
                    # Also sent when the parent *thread* that started this worker exits; the
                    # parent process lives on and getppid() still names it, so keep waiting.
                    signal.sigwait({signum})
                    # Or the thread went down with its whole process, whose other threads are
                    # still exiting: getppid() changes only once the last one is gone. Look
                    # again for a moment before going back to waiting for the kernel.
                    deadline = time.monotonic() + 1.0
                    while os.getppid() == parent and time.monotonic() < deadline:
                        time.sleep(0.01)
                shutdown()

            start_thread(wait)
            # A parent that died before prctl() took effect sends nothing: look once ourselves.
            check()
