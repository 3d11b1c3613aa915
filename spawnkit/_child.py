"""The worker side: the one place where per-rank setup happens, for every backend.

A backend's process calls :func:`run_worker` first thing. It leads its own process group,
arms the parent watch, sets the rank's environment, runs ``fn(rank, *args)`` and sends the
outcome home. Imports here are kept to what every worker needs: start-up cost is a feature.
"""

from __future__ import annotations

import _thread
import os
import pickle
import signal
import sys
import time

from . import _wire
from ._spec import PARENT_ONLY_FDS, WorkerSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CarriedFd", "Terminated", "parent_gone", "reporting_ready", "run_worker"]


class Terminated(BaseException):
    """Raised in a worker's main thread by SIGTERM, so its ``finally`` blocks get to run."""


# Set once the job is known to be gone. A lock, not a flag, makes parent_gone() run once
# when two paths find out together (arm()'s own check and the watch's thread).
_gone = _thread.allocate_lock()
# Whether a reaper process will SIGKILL this worker's group when the grace period ends.
_reaper_started = False
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL

# Where the rank is: SIGTERM raises Terminated only while user code runs. Once fn has
# returned or raised, the outcome is being sent and must arrive whole: a SIGTERM then only
# notes that a stop was asked for.
_SETUP, _RUNNING, _REPORTING = 0, 1, 2
_phase = _SETUP
_stop_requested = False
# (descriptor, device, inode) of the result channel as the worker received it.
_channel: tuple[int, int, int] | None = None


# The descriptors the running job's arguments carry, in the order the pickle refers to them.
_carried: tuple[int, ...] = ()
_handed: set[int] = set()


class CarriedFd:
    """A descriptor of the job's arguments, as ``multiprocessing``'s ``DupFd`` hands it over.

    Pickled in the parent in its place; :meth:`detach` gives the worker its copy.
    """

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        fd = _carried[self.index]
        if fd in _handed:  # two objects of the job share it: each owns a descriptor
            return os.dup(fd)
        _handed.add(fd)
        return fd


def reporting_ready() -> bool:
    """Whether this process runs a rank whose outcome can reach the parent by now."""
    return _phase != _SETUP


def _on_sigterm(signum: int, frame: object) -> None:
    global _stop_requested, _seen
    _seen = True
    if _stop_requested:
        return  # raised once: a nudge (below) or a second SIGTERM changes nothing
    _stop_requested = True
    if _phase != _REPORTING:
        raise Terminated("worker received SIGTERM")


def _install_sigterm_handler() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread, and reliably so.

    Python runs a handler only when the main thread next executes bytecode. A signal that
    arrives between that check and a blocking call (``signal.pause()``, ``time.sleep()``)
    is noted, but the call goes on sleeping, and the worker would sleep through its stop
    until the SIGKILL. The interpreter writes every caught signal to the wakeup
    descriptor; a thread reading it sends SIGTERM to the main thread again, at growing
    intervals, until the handler has run. The handler raises only once; an exception
    Python drops (the handler ran inside a weakref callback or a ``__del__``) is raised
    again.
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
        from ._fds import out_of_the_way, pipe
        from ._threads import start_thread

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
        start_thread(_nudge, read_end, _main_thread)


_main_thread = 0
_dropped_hook = sys.unraisablehook
_nudge_pipe: tuple[int, int] | None = None
# Whether a SIGTERM handler spawnkit watches over has run, and how many nudges it owes.
_seen = False
_nudges = 0


def _seeing(handler: Any) -> Any:
    """``handler``, noting that it ran; repeats caused by a nudge do not reach it."""

    def on_sigterm(signum: int, frame: object) -> Any:
        global _seen, _nudges
        if _seen and _nudges:
            _nudges -= 1
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
        _held[_thread.get_ident()] = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _release_sigterm() -> None:
    previous = _held.pop(_thread.get_ident(), None)
    if previous is not None and sys.platform != "win32":
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _forget_and_release() -> None:
    _forget_in_child()
    previous = _held.pop(_thread.get_ident(), None)
    _held.clear()
    if previous is not None and sys.platform != "win32":
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_sigterm, after_in_parent=_release_sigterm, after_in_child=_forget_and_release
    )


def _raise_dropped_terminated(unraisable: Any) -> None:
    global _stop_requested
    if isinstance(unraisable.exc_value, Terminated) and _phase != _REPORTING:
        # Raised where Python drops exceptions: raise it again, from the main thread's
        # next bytecode.
        _stop_requested = False
        if sys.platform != "win32" and _main_thread:
            signal.pthread_kill(_main_thread, signal.SIGTERM)
        return
    _dropped_hook(unraisable)


def _nudge(read_end: int, main_thread: int) -> None:
    global _nudges
    ours = _identity(read_end)
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


def _own_group() -> int | None:
    """This worker's process group id if it leads one, else ``None``.

    Only a group the worker leads is its own to signal: any other would be the job's, or
    the shell's that started the job.
    """
    if sys.platform == "win32":  # no process groups: the worker is signalled alone
        return None
    else:  # a platform branch type checkers understand
        pid = os.getpid()
        try:
            return pid if os.getpgid(0) == pid else None
        except OSError:
            return None


def _signal_group(signum: int) -> None:
    group = _own_group()
    try:
        if sys.platform == "win32" or group is None:
            os.kill(os.getpid(), signum)
        else:
            os.killpg(group, signum)
    except OSError:
        pass


def parent_gone(grace_period: float) -> None:
    """Shut this worker and every process in its group down: the job's process is gone.

    Called by the parent watch, from its thread, or from ``arm()`` itself when the job was
    gone before the watch was armed; runs once however often it is called. SIGTERM to the
    group first, so the worker's and its children's cleanup runs; SIGKILL to the group once
    ``grace_period`` seconds have passed, for whatever ignored it.

    The SIGKILL comes from a separate reaper process, because by then the worker may be gone
    while its children are not: a worker can die of SIGTERM at once (its own ``SIG_DFL``),
    catch it and return, or finish its cleanup early, and a child that ignores SIGTERM would
    outlive it. The reaper leads a group of its own, so the SIGTERM misses it, and it ends
    as soon as the worker's group is empty.
    """
    global _reaper_started
    if not _gone.acquire(False):
        return
    group = _own_group()
    if group is not None and grace_period > 0:
        _reaper_started = _start_reaper(group, grace_period)
    _signal_group(signal.SIGTERM)
    if not _reaper_started:
        # No reaper (Windows, fork failed, no grace): this thread keeps the bound; if the
        # worker ends first, _die_of_sigterm() kills the group on its way out.
        time.sleep(grace_period)
        _signal_group(_SIGKILL)


def _start_reaper(group: int, grace_period: float) -> bool:
    if sys.platform == "win32":  # no fork; no process group to reap there either
        return False
    else:  # a platform branch type checkers understand
        try:
            pid = os.fork()
        except (AttributeError, OSError):
            return False
        if pid == 0:
            try:
                _reap(group, grace_period)
            finally:
                os._exit(0)
        try:
            # Both sides move the reaper, so it is out of the group before the SIGTERM below,
            # whichever of the two runs first.
            os.setpgid(pid, pid)
        except OSError:
            pass
        return True


def _reap(group: int, grace_period: float) -> None:
    # Forked from a thread of a multithreaded worker, the reaper could in theory deadlock
    # on a lock some other thread held; SIGALRM's default action bounds its life anyway.
    # That thread (the watch's) blocks every signal, and a fork keeps its mask.
    if sys.platform == "win32":  # never forked there (see _start_reaper)
        return
    else:  # a platform branch type checkers understand
        if hasattr(signal, "alarm") and hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            signal.alarm(int(grace_period) + 2)
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                signal.signal(signum, signal.SIG_IGN)
            except ValueError:  # not Python's main thread after all: still bounded by the grace
                pass
        _close_all_fds()
        deadline = time.monotonic() + grace_period
        while True:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:  # the group is empty: nothing left to kill
                return
            except OSError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.01))
        try:
            os.killpg(group, _SIGKILL)
        except OSError:
            pass


def _close_all_fds() -> None:
    # The reaper holds nothing of the worker's: a socket or pipe copy kept open here would
    # keep the other end from seeing the worker go.
    try:
        fds = [int(name) for name in os.listdir("/dev/fd")]
    except OSError:
        fds = list(range(256))
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _identity(fd: int) -> tuple[int, int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (fd, st.st_dev, st.st_ino)


def _setup(spec: WorkerSpec) -> None:
    global _channel, _phase
    if spec.sigmask is not None and sys.platform != "win32":
        # The job blocked every signal while it started ranks; this is the mask its thread
        # had before. A signal sent meanwhile (an early SIGTERM) is delivered now.
        signal.pthread_sigmask(signal.SIG_SETMASK, spec.sigmask)
    # A copy of the parent (fork) had the parent's side of its jobs closed at the fork
    # (spawnkit._context); whatever else it inherited is the program's, and stays.
    PARENT_ONLY_FDS.clear()
    _channel = _identity(spec.result_fd)
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:  # already a session leader: its group is its own anyway
            pass
    try:
        _install_sigterm_handler()
    except ValueError:  # not the main thread: a backend running ranks in threads
        pass
    _phase = _RUNNING
    for fd in spec.watch_fds:
        os.set_inheritable(fd, False)
    if spec.watch is not None:
        grace = spec.grace_period
        spec.watch.arm(spec.watch_fds, spec, lambda: parent_gone(grace))
    if spec.env:
        os.environ.update(spec.env)
    _send(spec, _wire.STARTED, b"")


def _die_of_sigterm() -> None:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        pass
    if _gone.locked() and not _reaper_started:
        # The job is gone and nobody else will SIGKILL what ignored the SIGTERM.
        _signal_group(_SIGKILL)
    _flush()
    os.kill(os.getpid(), signal.SIGTERM)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _error_body(exc: BaseException) -> bytes:
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc_bytes: bytes | None = pickle.dumps(exc)
    except BaseException:  # noqa: BLE001 - any failure to pickle means "send text only"
        exc_bytes = None
    return pickle.dumps((exc_bytes, text))


def _send(spec: WorkerSpec, kind: bytes, body: bytes) -> bool:
    """Send a message if the result channel is still the one the parent gave us.

    User code may have closed it (``os.closerange``) and opened a file under the same
    number: writing then would put the pickled outcome into the user's file. ``False``
    when the channel is gone; a parent that went away is not that, the watch handles it.
    """
    if _channel is None or _identity(spec.result_fd) != _channel:
        return False
    try:
        _wire.send(spec.result_fd, kind, body)
    except OSError:  # the parent is gone; the watch takes it from here
        pass
    return True


def _report(spec: WorkerSpec, kind: bytes, body: bytes, status: int) -> int:
    """Send the outcome; the exit status the process should end with."""
    if not _send(spec, kind, body):
        # Nothing on stderr either: descriptor 2 may be the user's file by now. The parent
        # recognises the status, since no outcome came with it.
        status = _wire.LOST_CHANNEL_STATUS
    elif _channel is not None:
        try:
            os.close(spec.result_fd)
        except OSError:
            pass
    _flush()
    return status


def _dumps_result(result: object) -> bytes:
    # With the reducers registered with multiprocessing's ForkingPickler (torch's, say),
    # as the arguments came. Only when something imported it: registering needs it first.
    reduction = sys.modules.get("multiprocessing.reduction")
    if reduction is None:
        return pickle.dumps(result, 5)
    return bytes(reduction.ForkingPickler.dumps(result, 5))


def _outcome(spec: WorkerSpec, exc: BaseException) -> tuple[bytes, bytes, int]:
    """``(kind, body, exit status)`` for an exception that ended ``fn``."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0:
            return _wire.RESULT, pickle.dumps(None), 0
        if isinstance(code, int) and 0 < code < 256:
            return b"", b"", code
        if isinstance(code, int):
            # The OS keeps only the low byte: sys.exit(256) would read as success.
            exc = ValueError(
                f"rank {spec.rank} called sys.exit({code}), but an exit status is 0-255 "
                "(the system keeps only its low byte); exit with 1-255, or raise an exception"
            )
        else:
            try:
                print(code, file=sys.stderr)
            except (OSError, ValueError):  # stderr closed by the rank's own code
                pass
            return b"", b"", 1
    return _wire.ERROR, _error_body(exc), 1


def run_worker(spec: WorkerSpec) -> int:
    """Run one rank in this process and return the exit status the process should end with.

    A backend calls this first thing in the new process, then exits with the returned
    status (``sys.exit(run_worker(spec))``). It never raises: the outcome travels to the
    parent through the spec's result descriptor.
    """
    global _phase, _carried
    try:
        try:
            _setup(spec)
            if spec.payload is not None:
                _carried = spec.carried_fds
                fn, args = pickle.loads(spec.payload)
            else:
                assert spec.target is not None
                fn, args = spec.target
            result = fn(spec.rank, *args)
            _phase = _REPORTING
        except BaseException as exc:  # every failure, KeyboardInterrupt too, is reported
            _phase = _REPORTING
            if _stop_requested and signal.getsignal(signal.SIGTERM) is _on_sigterm:
                # Stopped by spawnkit: whatever fn raised on its way out (Terminated, or an
                # error from a finally block) is part of the stop, not a failure of its own.
                raise Terminated from exc
            kind, body, status = _outcome(spec, exc)
            if not kind:
                _flush()
                return status
            return _report(spec, kind, body, status)
        try:
            body = _dumps_result(result)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as the rank's error
            error = TypeError(
                f"rank {spec.rank} returned {type(result).__qualname__} {result!r:.200}, which "
                f"cannot be pickled back to the parent ({exc}); return plain data instead"
            )
            return _report(spec, _wire.ERROR, _error_body(error), 1)
        return _report(spec, _wire.RESULT, body, 0)
    except Terminated:
        _die_of_sigterm()
        return 128 + signal.SIGTERM
