"""Signals to the parent while a job runs in the foreground: stop the workers, then obey."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .. import _fds
from .._errors import Interrupted, JobTerminatedError
from .._spec import PARENT_ONLY_FDS

if TYPE_CHECKING:
    from types import FrameType

    from .._context import ProcessContext

__all__ = ["foreground"]


_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The handlers foreground() replaced, for every job waiting in the foreground right now: a
# fork of this process (a fork worker of another thread's job, the program's own child)
# must not inherit spawnkit's, which act on a job the child does not have.
_replaced: list[Mapping[signal.Signals, object]] = []


def _restore_in_child() -> None:
    if _replaced:
        try:
            signal.set_wakeup_fd(-1)  # the job's wakeup pipe is closed in the child
        except ValueError:
            pass
    for previous in reversed(_replaced):
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)  # type: ignore[arg-type]
            except (ValueError, TypeError, OSError):
                pass
    _replaced.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restore_in_child)


@contextmanager
def _wakeup_pipe(ctx: ProcessContext) -> Iterator[None]:
    """Have every signal with a Python handler wake ``join()``, whichever thread it hits.

    Python runs handlers in the main thread only; a signal delivered to another thread
    leaves the main thread asleep in ``select()`` until something else wakes it. The
    interpreter's C handler also writes the signal number to the wakeup descriptor, from
    any thread: join() waits on that pipe too. A pipe of its own, closed only after the
    previous wakeup descriptor is back, so the C handler never writes to a closed number.
    """
    read_end, write_end = _fds.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not possible here: the handlers alone will do
        os.close(read_end)
        os.close(write_end)
        yield
        return
    PARENT_ONLY_FDS.update((read_end, write_end))
    ctx.add_wake_fd(read_end)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        ctx.remove_wake_fd(read_end)
        PARENT_ONLY_FDS.difference_update((read_end, write_end))
        os.close(read_end)
        os.close(write_end)


@contextmanager
def foreground(ctx: ProcessContext) -> Iterator[None]:
    """While the caller waits for the job, SIGINT/SIGTERM stop the workers gracefully first.

    On either signal: every worker gets SIGTERM, then SIGKILL after the job's grace period;
    the previous handlers come back; then the signal is raised again in the parent, so it
    has its usual effect (``KeyboardInterrupt``, death by SIGTERM, or the program's own
    handler). The handler itself only records the signal and wakes ``join()``, which raises
    at a point where its bookkeeping is whole. A second signal during the stop changes
    nothing, so it cannot cut the stop short; a signal that arrives while spawnkit stops
    the job after a rank failed takes its course once that stop is done. Python runs signal
    handlers only in the main thread, so from any other thread nothing is installed and a
    signal to the parent takes its usual course. A signal that is ignored, or handled by C
    code, is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            ctx.interrupt(signum)

    previous = {
        sig: handler
        for sig in _SIGNALS
        # None: a handler installed from C, which Python can neither call nor restore.
        if (handler := signal.getsignal(sig)) not in (signal.SIG_IGN, None)
    }
    _replaced.append(previous)
    for sig in previous:
        signal.signal(sig, record)
    outcome: BaseException | None = None
    try:
        with _wakeup_pipe(ctx):
            try:
                yield
            except Interrupted:
                pass
            except BaseException as exc:  # noqa: BLE001 - raised below, after the signal
                outcome = exc
            if received:
                ctx.interrupted = None
                ctx.terminate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _replaced.remove(previous)
    if not received:
        if outcome is not None:
            raise outcome
        return
    signum = received[0]
    if previous.get(signal.Signals(signum)) is signal.default_int_handler:
        raise KeyboardInterrupt from outcome
    # The previous handler, or the default action, now meets the signal it would have met
    # without us: death by SIGTERM, or whatever the program's handler does.
    os.kill(os.getpid(), signum)
    raise JobTerminatedError(
        f"the job was stopped because the parent received {signal.Signals(signum).name}"
    ) from outcome
