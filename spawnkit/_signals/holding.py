"""Signals held while a job's ranks start, and handed to the program's handlers after.

A handler of the program's may raise at any bytecode. Raised between a process's start
and its handle being recorded, the process would run on unseen; raised inside a callback
(the ``logging`` module's fork hooks run in the parent after every fork), Python would
drop the exception. So while ranks start, this thread blocks every signal, and the
program's Python-level handlers are stood in for by a recorder; afterwards the real
handlers are back and receive, in order, what arrived meanwhile, at a point where their
exceptions propagate.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from . import mask

__all__ = ["Held", "hold", "release", "unblock"]


class Held:
    """What :func:`hold` changed: the thread's mask, the handlers it stood in for."""

    __slots__ = ("handlers", "mask", "received")

    def __init__(self) -> None:
        self.mask: Any = None
        self.handlers: dict[int, Any] = {}
        self.received: list[int] = []


# Handlers stood in for right now: a fork made meanwhile (a fork worker) gets them back.
_standing_in: list[Held] = []


def _run_pending_handlers() -> None:
    """Nothing: calling it is what lets the interpreter run handlers already tripped."""


def hold() -> Held:
    """Start holding signals in this thread (see the module's doc)."""
    held = Held()
    if sys.platform == "win32":
        return held
    else:
        held.mask = mask.block(mask.ALL)
        try:
            _run_pending_handlers()  # what tripped before: handled now, before any start
            if threading.current_thread() is threading.main_thread():

                def record(signum: int, frame: object) -> None:
                    held.received.append(signum)

                for signum in mask.ALL:
                    try:
                        handler = mask.getsignal(signum)
                    except (OSError, ValueError):
                        continue
                    if callable(handler):
                        held.handlers[int(signum)] = handler
                        signal.signal(signum, record)
                _standing_in.append(held)
        except BaseException:
            release(held, deliver=False)
            raise
        return held


def unblock(previous: Any) -> None:
    """Put this thread's mask back to ``previous`` (from :func:`hold`): held signals arrive."""
    if sys.platform != "win32" and previous is not None:
        # A write to a worker that died at once (multiprocessing's, to its pipe) raised
        # SIGPIPE while it was blocked: EPIPE told the writer already; the signal would
        # kill us.
        if signal.SIGPIPE not in previous and signal.SIGPIPE in mask.pending():
            signal.sigwait({signal.SIGPIPE})
        mask.set_mask(previous)


def release(held: Held, *, deliver: bool = True) -> list[int]:
    """Stop holding: the mask and the handlers come back, then what arrived is delivered.

    A handler that raises raises here. With ``deliver=False`` nothing is delivered, and
    the thread keeps blocking signals: the signals that arrived are returned and the caller
    unblocks with :func:`unblock` (``held.mask``) once its own handlers are in place.
    """
    if deliver:
        unblock(held.mask)
        held.mask = None
    _run_pending_handlers()  # what was blocked reaches the recorder now
    for signum, handler in held.handlers.items():
        signal.signal(signum, handler)
    if held in _standing_in:
        _standing_in.remove(held)
    received, held.received = held.received, []
    if deliver:
        for signum in received:
            handler = held.handlers.get(signum)
            if callable(handler):
                handler(signum, None)
        return []
    return received


def _restore_in_child() -> None:
    for held in reversed(_standing_in):
        for signum, handler in held.handlers.items():
            try:
                signal.signal(signum, handler)
            except (OSError, ValueError):
                pass
    _standing_in.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restore_in_child)
