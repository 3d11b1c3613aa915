"""Signals to the parent while a job runs in the foreground: stop the workers, then obey."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._errors import JobTerminatedError

if TYPE_CHECKING:
    from types import FrameType

    from ._context import ProcessContext

__all__ = ["foreground"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _ParentSignal(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_parent_signal(signum: int, frame: FrameType | None) -> None:
    # Ignored from the first one on, before anything else runs: a second Ctrl-C must not
    # cut the graceful stop short and leak workers. The stop is bounded by the grace period.
    for sig in _SIGNALS:
        if signal.getsignal(sig) is _raise_parent_signal:
            signal.signal(sig, signal.SIG_IGN)
    raise _ParentSignal(signum)


@contextmanager
def foreground(ctx: ProcessContext) -> Iterator[None]:
    """While the caller waits for the job, SIGINT/SIGTERM stop the workers gracefully first.

    On either signal: every worker gets SIGTERM, then SIGKILL after the job's grace period;
    the previous handlers come back; then the signal is raised again in the parent, so it
    has its usual effect (``KeyboardInterrupt``, death by SIGTERM, or the program's own
    handler). Python runs signal handlers only in the main thread, so from any other thread
    nothing is installed and a signal to the parent takes its usual course. A signal that
    is ignored, or handled by C code, is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: handler
        for sig in _SIGNALS
        # None: a handler installed from C, which Python can neither call nor restore.
        if (handler := signal.getsignal(sig)) not in (signal.SIG_IGN, None)
    }
    for sig in previous:
        signal.signal(sig, _raise_parent_signal)
    try:
        yield
    except _ParentSignal as received:
        ctx.terminate()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signum = received.signum
        if previous.get(signal.Signals(signum)) is signal.default_int_handler:
            raise KeyboardInterrupt from None
        # The previous handler, or the default action, now meets the signal it would have
        # met without us: death by SIGTERM, or whatever the program's handler does.
        os.kill(os.getpid(), signum)
        name = signal.Signals(signum).name
        raise JobTerminatedError(
            f"the job was stopped because the parent received {name}"
        ) from None
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) in (_raise_parent_signal, signal.SIG_IGN):
                signal.signal(sig, handler)
