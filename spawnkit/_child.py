"""The worker side: the one place where per-rank setup happens, for every backend.

A backend's process calls :func:`run_worker` first thing. It leads its own process group,
arms the parent watch, sets the rank's environment, runs ``fn(rank, *args)`` and sends the
outcome home. Imports here are kept to what every worker needs: start-up cost is a feature.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from . import _wire
from ._spec import PARENT_ONLY_FDS, WorkerSpec

__all__ = ["Terminated", "run_worker"]


class Terminated(BaseException):
    """Raised in a worker's main thread by SIGTERM, so its ``finally`` blocks get to run."""


_parent_gone = False


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated("worker received SIGTERM")


def _signal_group(signum: int) -> None:
    try:
        os.killpg(os.getpgid(0), signum)
    except (AttributeError, OSError):  # no process groups (Windows), or we lead none
        os.kill(os.getpid(), signum)


def parent_gone(grace_period: float) -> None:
    """Shut this worker and its children down because the job's process is gone.

    Runs in the watch's thread (or synchronously, when the parent was gone before the watch
    was armed). SIGTERM first, so the worker's cleanup runs; SIGKILL after ``grace_period``
    for whatever ignores it, so nothing outlives the bound.
    """
    global _parent_gone
    _parent_gone = True
    _signal_group(signal.SIGTERM)
    import time

    time.sleep(grace_period)
    _signal_group(signal.SIGKILL)


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
    if _parent_gone:
        _signal_group(signal.SIGKILL)
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
        elif isinstance(exc.code, int):
            _flush()
            return exc.code
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
