"""A local worker's SIGTERM: raised as :class:`Terminated` in its main thread, reliably.

Imported in every local worker; only the interpreter's start-up set and spawnkit's light
modules come with it.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import time

from .. import _worker
from .._fds import identity as _identity
from . import mask

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Terminated", "install", "raise_if_stopped", "restore_default", "stop_before_start"]


class Terminated(BaseException):
    """Raised in a worker's main thread by SIGTERM, so its ``finally`` blocks get to run."""


_stop_requested = False
_main_thread = 0
_dropped_hook = sys.unraisablehook
_nudge_pipe: tuple[int, int] | None = None
# Whether a SIGTERM handler spawnkit watches over has run, and how many nudges it owes.
_seen = False
_nudges = 0


def stop_requested() -> bool:
    """Whether a SIGTERM has reached this worker's handler."""
    return _stop_requested


def _on_sigterm(signum: int, frame: Any) -> None:
    global _stop_requested, _seen
    if not _stop_requested and _worker.phase != _worker.REPORTING and _would_be_dropped(frame):
        return  # left unseen: the nudge thread sends it again once the hook has returned
    _seen = True
    if _stop_requested:
        return  # raised once: a nudge (below) or a second SIGTERM changes nothing
    _stop_requested = True
    if _worker.phase != _worker.REPORTING:
        raise Terminated("worker received SIGTERM")


def stop_before_start() -> Terminated:
    """The stop of a worker whose job was gone before its rank began, to be raised.

    The SIGTERM its group was sent may still be on its way to the handler, which must then
    leave the stop alone: it is already under way.
    """
    global _stop_requested
    _stop_requested = True
    return Terminated("the job's process was gone before the rank started")


def raise_if_stopped(exc: BaseException) -> None:
    """Raise :class:`Terminated` if ``exc`` ended the rank's code as part of a stop.

    Whatever ``fn`` raised on its way out of a SIGTERM (``Terminated``, or an error from a
    ``finally`` block) is part of the stop, not a failure of its own.
    """
    if _stop_requested and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        raise Terminated from exc


def install() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread, and reliably so.

    Python runs a handler only when the main thread next executes bytecode. A signal that
    arrives between that check and a blocking call (``signal.pause()``, ``time.sleep()``)
    is noted, but the call goes on sleeping, and the worker would sleep through its stop
    until the SIGKILL. The interpreter writes every caught signal to the wakeup
    descriptor; a thread reading it sends SIGTERM to the main thread again, at growing
    intervals, until the handler has run. The handler raises only once; an exception
    Python drops (the handler ran inside a weakref callback or a ``__del__``) is raised
    again. Raises ``ValueError`` outside the main thread.
    """
    global _main_thread, _dropped_hook, _nudge_pipe
    inherited = signal.getsignal(signal.SIGTERM)
    if inherited is signal.SIG_DFL:
        handler: Any = _on_sigterm
    elif callable(inherited):
        # A fork worker keeps the parent's own handler, as every fork child does; it gets
        # the same protection against sleeping through its signal.
        handler = _seeing(inherited)
    else:
        return  # SIG_IGN, or a handler installed from C: not ours to touch
    if sys.platform == "win32":  # no pthread_kill, and no race to mend
        signal.signal(signal.SIGTERM, handler)
    else:
        from .._fds import out_of_the_way, pipe
        from .threads import start_thread

        _main_thread = _thread.get_ident()
        # Everything imported before the handler exists: an import runs callbacks.
        read_end, write_end = pipe()
        read_end, write_end = out_of_the_way(read_end), out_of_the_way(write_end)
        _nudge_pipe = (read_end, write_end)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        _dropped_hook = sys.unraisablehook
        sys.unraisablehook = _raise_dropped_terminated
        signal.signal(signal.SIGTERM, handler)
        # Its identity now: the thread may first run once fn has begun, and closed the pipe.
        start_thread(_nudge, read_end, _identity(read_end), _main_thread)


def restore_default() -> None:
    """Put SIGTERM's default action back (on the way to dying of it)."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        pass


def _seeing(handler: Any) -> Any:
    """``handler``, noting that it ran; repeats caused by a nudge do not reach it."""

    def on_sigterm(signum: int, frame: Any) -> Any:
        global _seen, _nudges
        if _seen and _nudges:
            _nudges -= 1
            return None
        if not _seen and _would_be_dropped(frame):
            # As for _on_sigterm: what the handler raised would be lost. A nudge that
            # arrives meanwhile is spent here, or a later SIGTERM would pass for one.
            _nudges = max(_nudges - 1, 0)
            return None
        _seen = True
        return handler(signum, frame)

    on_sigterm.__wrapped__ = handler  # type: ignore[attr-defined]
    return on_sigterm


def _ours(handler: object) -> bool:
    return handler is _on_sigterm or hasattr(handler, "__wrapped__")


def _forget_in_child() -> None:
    # A process the worker forks (its own child, or the reaper) is not a rank: it must not
    # write its signals into the worker's nudge pipe, nor raise Terminated.
    global _main_thread, _nudge_pipe
    if _nudge_pipe is None:
        return
    try:
        previous = signal.set_wakeup_fd(-1)
        if previous != _nudge_pipe[1]:  # the program's own: leave it
            signal.set_wakeup_fd(previous)
        if _ours(signal.getsignal(signal.SIGTERM)):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread
        pass
    sys.unraisablehook = _dropped_hook
    for fd in _nudge_pipe:
        try:
            os.close(fd)
        except OSError:
            pass
    _nudge_pipe = None
    _main_thread = 0


# The forking thread's mask before _hold_sigterm, by thread.
_held: dict[int, Any] = {}


def _hold_sigterm() -> None:
    # Between the fork and _forget_in_child, a SIGTERM for the child would still go through
    # the worker's handler and into the worker's nudge pipe, and stop the worker: hold it
    # back until the child has its own disposition.
    if _nudge_pipe is not None and sys.platform != "win32":
        _held[_thread.get_ident()] = mask.block({signal.SIGTERM})


def _release_sigterm() -> None:
    previous = _held.pop(_thread.get_ident(), None)
    if previous is not None and sys.platform != "win32":
        mask.set_mask(previous)


def _forget_and_release() -> None:
    _forget_in_child()
    previous = _held.pop(_thread.get_ident(), None)
    _held.clear()
    if previous is not None and sys.platform != "win32":
        mask.set_mask(previous)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_sigterm, after_in_parent=_release_sigterm, after_in_child=_forget_and_release
    )


def _code_of(hook: object) -> object:
    function = getattr(hook, "__func__", hook)  # a bound method's function
    code = getattr(function, "__code__", None)
    if code is None:  # an instance of a class that defines __call__
        call = vars(type(hook)).get("__call__")
        code = getattr(call, "__code__", None)
    return code


def _would_be_dropped(frame: Any) -> bool:
    """Whether an exception raised at ``frame`` would be lost: it runs in an unraisable hook.

    Python prints what such a hook raises and goes on, so a SIGTERM that arrives while
    one runs (say pytest's, for an error in a destructor of a fork rank) must wait until
    it has returned. Only the nudge thread can send it again: without one, never wait.
    """
    if _nudge_pipe is None:
        return False
    codes = [_code_of(h) for h in (_raise_dropped_terminated, _dropped_hook, sys.unraisablehook)]
    # By identity: code objects compare equal by their contents alone.
    hooks = {id(code) for code in codes if code is not None}
    while frame is not None:
        if id(frame.f_code) in hooks:
            return True
        frame = frame.f_back
    return False


def _raise_dropped_terminated(unraisable: Any) -> None:
    global _stop_requested, _seen
    if isinstance(unraisable.exc_value, Terminated) and _worker.phase != _worker.REPORTING:
        # Raised where Python drops exceptions: raise it again, from the main thread's
        # next bytecode. Not by signalling the main thread from here: this hook runs in it,
        # the handler would run before the hook returns, and its exception would be
        # dropped as well. The nudge thread sends the SIGTERM instead, as for a signal the
        # handler has not seen yet.
        _stop_requested = False
        if sys.platform != "win32" and _nudge_pipe is not None:
            _seen = False
            try:
                os.write(_nudge_pipe[1], bytes([signal.SIGTERM]))
            except OSError:  # full: the nudge thread has a SIGTERM to act on already
                pass
        return
    _dropped_hook(unraisable)


def _nudge(read_end: int, ours: tuple[int, int, int] | None, main_thread: int) -> None:
    global _nudges
    while True:
        if _identity(read_end) != ours:
            return  # user code closed it and put a file of its own there: never read that
        try:
            noted = os.read(read_end, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not noted:
            return
        delay = 0.005
        while signal.SIGTERM in noted and not _seen:
            time.sleep(delay)
            if _seen or not _ours(signal.getsignal(signal.SIGTERM)):
                break
            _nudges += 1
            try:
                if sys.platform != "win32":
                    signal.pthread_kill(main_thread, signal.SIGTERM)
            except OSError:  # the main thread is gone: the process is ending
                return
            delay = min(delay * 2, 0.1)
