"""What every worker does, wherever it runs: unpickle the job, run it, make the report.

This part needs nothing of the process it runs in: no process group, no signal handler, no
descriptor but those the job's own arguments carry. A backend whose workers live in someone
else's process (an actor of a cluster engine) calls :func:`run_rank` and carries the
:class:`~spawnkit._wire.Report` it returns home its own way; a local process calls
:func:`spawnkit.run_worker`, which adds the local setup around it (``spawnkit._child``).
"""

from __future__ import annotations

import os
import pickle
import sys

from . import _wire
from ._signals.threads import wait_running

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._spec import WorkerSpec

__all__ = ["CarriedFd", "reporting_ready", "run_rank"]

# Where the rank is. A stop (SIGTERM, in a local worker) interrupts user code only while it
# runs: once fn has returned or raised, the outcome is being made and must arrive whole.
SETUP, RUNNING, REPORTING = 0, 1, 2
phase = SETUP

# Set by a local worker's setup: called with the exception that ended fn, it raises the
# worker's own stop instead when the exception was part of that stop (spawnkit._child).
stop_hook: Callable[[BaseException], None] | None = None

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
    return phase != SETUP


def flush() -> None:
    """Flush Python's standard streams, as far as they still can be."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def error_body(exc: BaseException, *, skip: int = 0) -> bytes:
    """The body of an ``ERROR`` report: the exception, pickled if it can be, its text, and
    when it happened on this machine's monotonic clock (the parent's, for a local worker:
    the job's root cause is its earliest failure)."""
    import time
    import traceback

    tb = exc.__traceback__
    for _ in range(skip):
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        exc_bytes: bytes | None = pickle.dumps(exc)
    except BaseException:  # noqa: BLE001 - any failure to pickle means "send text only"
        exc_bytes = _by_value(exc)
    return pickle.dumps((exc_bytes, text, time.monotonic()))


def _by_value(obj: object) -> bytes | None:
    """``obj`` pickled with cloudpickle if the job came with it, else ``None``.

    A class the parent sent by value (defined in its main program) is no module's attribute
    here, so pickle refuses it by name. cloudpickle sends it back with the id it came with,
    which the parent's cloudpickle turns into the parent's own class.
    """
    cloudpickle = sys.modules.get("cloudpickle")
    try:
        return None if cloudpickle is None else bytes(cloudpickle.dumps(obj, protocol=5))
    except BaseException:  # noqa: BLE001 - any failure to pickle means "send text only"
        return None


def _dumps_result(result: object) -> bytes:
    # With the reducers registered with multiprocessing's ForkingPickler (torch's, say),
    # as the arguments came. Only when something imported it: registering needs it first.
    reduction = sys.modules.get("multiprocessing.reduction")
    if reduction is None:
        return pickle.dumps(result, 5)
    return bytes(reduction.ForkingPickler.dumps(result, 5))


def _failure(spec: WorkerSpec, exc: BaseException) -> _wire.Report:
    """The report for an exception that ended ``fn``."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0:
            return _wire.Report(_wire.RESULT, pickle.dumps(None), 0)
        if isinstance(code, int) and 0 < code < 256:
            return _wire.Report(b"", b"", code)
        if isinstance(code, int):
            # The OS keeps only the low byte: sys.exit(256) would read as success.
            exc = ValueError(
                f"rank {spec.rank} called sys.exit({code}), but an exit status is 0-255 "
                "(the system keeps only its low byte); exit with 1-255, or raise an exception"
            )
        else:
            from ._errors import safe_str

            try:
                print(safe_str(code), file=sys.stderr)
            except (OSError, ValueError):  # stderr closed by the rank's own code
                pass
            return _wire.Report(b"", b"", 1)
    # Without run_rank's own frame: the traceback starts where the rank's code does.
    return _wire.Report(_wire.ERROR, error_body(exc, skip=1), 1)


def run_rank(spec: WorkerSpec) -> _wire.Report:
    """Run ``fn(rank, *args)`` of ``spec`` here and return how it went; never raises.

    Sets the rank's environment (:attr:`WorkerSpec.env`) first. The report holds the
    pickled return value or error and the exit status a process running only this rank
    would end with; ``sys.exit(3)`` in ``fn`` is a report with no message and status 3.
    In a local worker, what a SIGTERM from the job raised comes out as the stop it is.
    """
    global phase, _carried
    try:
        if spec.env:
            os.environ.update(spec.env)
        phase = RUNNING
        if spec.payload is not None:
            _carried = spec.carried_fds
            fn, args = pickle.loads(spec.payload)
        else:
            assert spec.target is not None
            fn, args = spec.target
        # 3.14+'s faulthandler stops its dump at a thread listed but not run yet: a crash
        # in fn's first instant would lose fn's frames. Earlier ones dump past it.
        if sys.version_info >= (3, 14):
            wait_running()
        result = fn(spec.rank, *args)
        phase = REPORTING
    except BaseException as exc:  # noqa: BLE001 - every failure, KeyboardInterrupt too, is reported
        phase = REPORTING
        if stop_hook is not None:
            stop_hook(exc)
        return _failure(spec, exc)
    try:
        body = _dumps_result(result)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the rank's error
        by_value = _by_value(result)  # an instance of a class the job brought by value
        if by_value is not None:
            return _wire.Report(_wire.RESULT, by_value, 0)
        from ._errors import safe_str

        error = TypeError(
            f"rank {spec.rank} returned {type(result).__qualname__} "
            f"{safe_str(result, repr):.200}, which cannot be pickled back to the parent "
            f"({safe_str(exc)}); return plain data instead"
        )
        return _wire.Report(_wire.ERROR, error_body(error), 1)
    return _wire.Report(_wire.RESULT, body, 0)
