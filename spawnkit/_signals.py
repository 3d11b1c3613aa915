"""Signals to the parent while a job runs in the foreground: stop the workers, then obey."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._context import Interrupted
from ._errors import JobTerminatedError

if TYPE_CHECKING:
    from types import FrameType

    from ._context import ProcessContext

__all__ = ["foreground"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def foreground(ctx: ProcessContext) -> Iterator[None]:
    """While the caller waits for the job, SIGINT/SIGTERM stop the workers gracefully first.

    On either signal: every worker gets SIGTERM, then SIGKILL after the job's grace period;
    the previous handlers come back; then the signal is raised again in the parent, so it
    has its usual effect (``KeyboardInterrupt``, death by SIGTERM, or the program's own
    handler). The handler itself only records the signal and wakes ``join()``, which raises
    at a point where its bookkeeping is whole. A second signal during the stop changes
    nothing, so it cannot cut the stop short. Python runs signal handlers only in the main
    thread, so from any other thread nothing is installed and a signal to the parent takes
    its usual course. A signal that is ignored, or handled by C code, is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum: int, frame: FrameType | None) -> None:
        if received is None:
            ctx.interrupt(signum)

    received: int | None = None
    previous = {
        sig: handler
        for sig in _SIGNALS
        # None: a handler installed from C, which Python can neither call nor restore.
        if (handler := signal.getsignal(sig)) not in (signal.SIG_IGN, None)
    }
    for sig in previous:
        signal.signal(sig, record)
    try:
        try:
            yield
        except Interrupted as exc:
            received = exc.signum
        if received is None and ctx.interrupted is not None:
            received = ctx.interrupted  # it came after join() had finished: the job is done
        if received is not None:
            ctx.interrupted = None
            ctx.terminate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received is None:
        return
    if previous.get(signal.Signals(received)) is signal.default_int_handler:
        raise KeyboardInterrupt
    # The previous handler, or the default action, now meets the signal it would have met
    # without us: death by SIGTERM, or whatever the program's handler does.
    os.kill(os.getpid(), received)
    raise JobTerminatedError(
        f"the job was stopped because the parent received {signal.Signals(received).name}"
    )
