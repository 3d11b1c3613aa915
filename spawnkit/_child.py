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

__all__ = ["Terminated", "parent_gone", "run_worker"]


class Terminated(BaseException):
    """Raised in a worker's main thread by SIGTERM, so its ``finally`` blocks get to run."""


# Set once the job is known to be gone. A lock, not a flag, makes parent_gone() run once
# when two paths find out together (arm()'s own check and the watch's thread).
_gone = _thread.allocate_lock()
# Whether a reaper process will SIGKILL this worker's group when the grace period ends.
_reaper_started = False
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated("worker received SIGTERM")


def _own_group() -> int | None:
    """This worker's process group id if it leads one, else ``None``.

    Only a group the worker leads is its own to signal: any other would be the job's, or
    the shell's that started the job.
    """
    if not hasattr(os, "killpg"):
        return None
    pid = os.getpid()
    try:
        return pid if os.getpgid(0) == pid else None
    except OSError:
        return None


def _signal_group(signum: int) -> None:
    group = _own_group()
    try:
        if group is None:
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
    if hasattr(signal, "alarm"):
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


def _close_parent_fds(keep: tuple[int, ...]) -> None:
    # Only a fork child has anything here: it inherited the parent's side of every running
    # job, including other jobs' lifeline write ends that would hide the parent's death.
    for fd in PARENT_ONLY_FDS.difference(keep):
        try:
            os.close(fd)
        except OSError:
            pass
    PARENT_ONLY_FDS.clear()


def _setup(spec: WorkerSpec) -> None:
    _close_parent_fds(spec.fds)
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:  # already a session leader: its group is its own anyway
            pass
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: a backend running ranks in threads
        pass
    for fd in spec.watch_fds:
        os.set_inheritable(fd, False)
    if spec.watch is not None:
        grace = spec.grace_period
        spec.watch.arm(spec.watch_fds, spec, lambda: parent_gone(grace))
    if spec.env:
        os.environ.update(spec.env)


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


def _release_sigterm() -> None:
    # From here on the outcome is being sent: a SIGTERM now should simply end the process.
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        pass


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


def _report(spec: WorkerSpec, kind: bytes, body: bytes) -> None:
    try:
        _wire.send(spec.result_fd, kind, body)
    except OSError:  # the parent is gone; the watch takes it from here
        pass
    finally:
        try:
            os.close(spec.result_fd)
        except OSError:
            pass


def run_worker(spec: WorkerSpec) -> int:
    """Run one rank in this process and return the exit status the process should end with.

    A backend calls this first thing in the new process, then exits with the returned
    status (``sys.exit(run_worker(spec))``). It never raises: the outcome travels to the
    parent through the spec's result descriptor.
    """
    try:
        _setup(spec)
        if spec.payload is not None:
            fn, args = pickle.loads(spec.payload)
        else:
            assert spec.target is not None
            fn, args = spec.target
        result = fn(spec.rank, *args)
        try:
            body = pickle.dumps(result)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as the rank's error
            raise TypeError(
                f"rank {spec.rank} returned {type(result).__qualname__} {result!r:.200}, which "
                f"cannot be pickled back to the parent ({exc}); return plain data instead"
            ) from None
    except Terminated:
        _die_of_sigterm()
        return 128 + signal.SIGTERM
    except SystemExit as exc:
        _release_sigterm()
        if exc.code is None or exc.code == 0:
            body = pickle.dumps(None)
        elif isinstance(exc.code, int) and 0 < exc.code < 256:
            _flush()
            return exc.code
        elif isinstance(exc.code, int):
            # The OS keeps only the low byte: sys.exit(256) would read as success.
            error = ValueError(
                f"rank {spec.rank} called sys.exit({exc.code}), but an exit status is 0-255 "
                "(the system keeps only its low byte); exit with 1-255, or raise an exception"
            )
            _report(spec, _wire.ERROR, _error_body(error))
            _flush()
            return 1
        else:
            print(exc.code, file=sys.stderr)
            _flush()
            return 1
    except BaseException as exc:  # noqa: BLE001 - every failure, KeyboardInterrupt too, is reported
        _release_sigterm()
        _report(spec, _wire.ERROR, _error_body(exc))
        _flush()
        return 1
    _release_sigterm()
    _report(spec, _wire.RESULT, body)
    _flush()
    return 0
