"""One rank's record, and what its backend's outcome means: a value, a failure or a stop."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _wire
from ._errors import (
    NoMainGuard,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    RemoteTraceback,
    safe_str,
)
from ._report import RankReport, signal_name
from ._signals.sigterm import Terminated

if TYPE_CHECKING:
    from ._protocols import WorkerHandle

__all__ = ["Rank", "take_early_report", "take_outcome"]


@dataclass(eq=False)
class Rank:
    rank: int
    handle: WorkerHandle
    logs: dict[str, str]
    early_report: Callable[[], _wire.Report | None] | None  # see ReportsEarly
    status: int | None = None
    killed: bool = False  # core asked it to stop
    asked_to_stop: bool = False  # the program did, through its RankProcess: no restart
    stopped: bool = False  # it ended because core stopped it: neither success nor failure
    value: Any = None
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    ended: float | None = None
    ended_wall: float | None = None
    # The rank's own failure, and when it happened (monotonic), for the root cause.
    failure: tuple[float, ProcessException] | None = None
    # The traceback of what the rank raised, as it reported it: also its stderr log's.
    traceback: str | None = None
    no_main_guard: bool = False  # it failed because the script has no main guard

    def report(self) -> RankReport:
        status, failure = self.status, self.failure
        state = "succeeded"
        if status is None:
            state = "running"
        elif failure is not None:
            state = "failed"
        elif self.stopped:
            state = "stopped"
        error = None
        if failure is not None and isinstance(failure[1], ProcessRaisedException):
            error = _one_line(failure[1])
        return RankReport(
            rank=self.rank,
            state=state,
            pid=self.handle.pid,
            exit_code=status,
            signal=signal_name(-status) if status is not None and status < 0 else None,
            error=error,
            started=self.started_wall,
            ended=self.ended_wall,
            logs=dict(self.logs),
        )


def _one_line(failure: ProcessRaisedException) -> str:
    """``ValueError: bad input`` for the report, from the exception or the traceback's end."""
    if failure.exception is not None:
        text = f"{type(failure.exception).__name__}: {safe_str(failure.exception)}".rstrip(": ")
    else:
        tail = failure.remote_traceback.strip().splitlines()
        text = tail[-1] if tail else "an exception"
    first = text.splitlines()[0] if text else text
    return first if len(first) <= 200 else first[:197] + "..."


def take_early_report(r: Rank, *, local: bool) -> None:
    """Take a rank's error report as its failure as soon as it arrived whole.

    The process may take seconds more to exit (a non-daemon thread, a library's teardown at
    exit: gloo's takes 1-5 s), or never exit on its own. Its failure is known now, so the
    job stops at once, this rank with the others (see spawnkit._child).
    """
    report = r.early_report() if r.early_report is not None else None
    if report is not None and report.kind == _wire.ERROR:
        _raised(r, report.body, local=local)


def take_outcome(r: Rank, outcome: _wire.Outcome, *, local: bool) -> None:
    """Record how rank ``r`` ended: its value, its failure, or the stop core asked for."""
    status = r.status = outcome.status
    r.ended, r.ended_wall = time.monotonic(), time.time()
    report, lost = outcome.report, outcome.lost
    kind = report.kind if report is not None else None
    if r.killed and outcome.stopped:
        pass  # its backend says core's stop ended it, whatever the worker made of the stop
    elif kind == _wire.ERROR:
        # Raised before any stop reached it: a failure even if core stopped it since.
        assert report is not None
        if r.failure is None:  # else taken when the report arrived (take_early_report)
            _raised(r, report.body, local=local)
    elif kind == _wire.RESULT and (status == 0 or lost):
        assert report is not None
        try:
            r.value = pickle.loads(report.body)
        except BaseException as exc:  # noqa: BLE001 - the rank's result is its failure
            why = safe_str(exc, repr)
            msg = f"\n\n-- Process {r.rank} returned a value the parent cannot unpickle: {why}"
            r.failure = (time.monotonic(), ProcessRaisedException(msg, r.rank, r.handle.pid, why))
    elif not r.killed and not (status == 0 and kind is None and outcome.started and not lost):
        # (Status 0 after it ran, without a report, is os._exit(0): success, as under torch.)
        r.failure = (r.ended, _exited(r, outcome))
    r.stopped = r.killed and r.failure is None and (status != 0 or outcome.stopped)


def _raised(r: Rank, body: bytes, *, local: bool) -> None:
    """The failure an ``ERROR`` report tells of, unless it is the stop core asked for."""
    when = time.monotonic()
    try:
        exc_bytes, text, *rest = pickle.loads(body)
    except BaseException as exc:  # noqa: BLE001 - a torn or foreign message
        exc_bytes, text, rest = None, f"(the error report could not be read: {exc!r})\n", []
    # The worker's clock is this machine's monotonic clock only for a local worker.
    if local and rest and isinstance(rest[0], float):
        when = min(when, rest[0])
    original: BaseException | None = None
    if exc_bytes is not None:
        try:
            original = pickle.loads(exc_bytes)
        except BaseException:  # noqa: BLE001 - not rebuildable here: the text still tells
            original = None
        if not isinstance(original, BaseException):
            original = None
    if r.killed and isinstance(original, Terminated):
        # A worker elsewhere whose graceful stop ran: the stop core asked for, as a local
        # worker's death by SIGTERM is. (A local worker never reports it: spawnkit._child.)
        return
    r.no_main_guard |= isinstance(original, NoMainGuard)
    msg = f"\n\n-- Process {r.rank} terminated with the following error:\n{text}"
    failure = ProcessRaisedException(msg, r.rank, r.handle.pid, text, original)
    if original is not None:
        # The message shows the text already: printed whole, the chain points at it.
        original.__cause__ = RemoteTraceback(text, shown_by=f"rank {r.rank}")
        failure.__cause__ = original
    r.traceback = text
    r.failure = (when, failure)


def _exited(r: Rank, outcome: _wire.Outcome) -> ProcessExitedException:
    pid, status, started, lost = r.handle.pid, outcome.status, outcome.started, outcome.lost
    if lost:
        return ProcessExitedException(
            f"process {r.rank} ended without reporting an outcome, and its exit status "
            f"is unknown: {lost}",
            r.rank,
            pid,
            status,
        )
    because = f" ({outcome.reason})" if outcome.reason else ""
    if status < 0:
        name = signal_name(-status)
        return ProcessExitedException(
            f"process {r.rank} terminated with signal {name}{because}", r.rank, pid, status, name
        )
    msg = f"process {r.rank} terminated with exit code {status}"
    if not started and status == _wire.NO_MAIN_GUARD_STATUS:
        r.no_main_guard = True
        msg += (
            ": importing the parent's main module in the worker started another job. "
            'Put the code that starts the job under `if __name__ == "__main__":` '
            "(backends that start a new interpreter import the main module in every "
            "worker), or use backend='fork'"
        )
    elif not started and status == 0:
        msg = (
            f"process {r.rank} exited with status 0 without running spawnkit's worker "
            "code: the backend did not start it (a wrapper that dropped the command?)"
        )
    elif not started:
        msg += (
            " before spawnkit's worker code ran (while the backend prepared the "
            "process, e.g. importing the parent's main module); its stderr says why"
        )
    elif status == _wire.LOST_CHANNEL_STATUS:
        msg += (
            ": the rank's own code closed or replaced spawnkit's result channel "
            "(os.closerange, os.close, os.dup2 on it), so its outcome was lost"
        )
    return ProcessExitedException(msg + because, r.rank, pid, status)
