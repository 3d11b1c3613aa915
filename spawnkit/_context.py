"""The one implementation of a running job: launch, join, terminate, errors and results.

Every backend goes through here; a backend only starts processes and hands back handles.
"""

from __future__ import annotations

import atexit
import errno
import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import wait as _wait_ready
from typing import TYPE_CHECKING, Any, Optional, Tuple, final  # noqa: UP035 - see RankJob

from . import _fds, _wire
from ._errors import (
    ConfigError,
    InvalidArgumentError,
    JobTerminatedError,
    LaunchError,
    NoMainGuard,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    RemoteTraceback,
    SpawnError,
    SpawnTimeoutError,
    StopError,
    no_main_guard_message,
    safe_str,
)
from ._report import JobReport, RankReport, signal_name
from ._signals import holding as _holding
from ._signals.foreground import Interrupted
from ._spec import PARENT_ONLY_FDS, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

    from ._output import OutputPlan
    from ._protocols import Backend, ParentWatch, WorkerHandle
    from ._wire import Outcome

    # What one rank runs: the pickled job, or (fn, args) unpickled, and the descriptors
    # its arguments carry. typing's names: an alias is an expression that Python 3.9 reads.
    RankJob = Tuple[  # noqa: UP006
        Optional[bytes],
        Optional[Tuple[Callable[..., Any], Tuple[Any, ...]]],  # noqa: UP006
        Tuple[int, ...],  # noqa: UP006
    ]

__all__ = ["Interrupted", "ProcessContext", "RankProcess", "check_seconds", "launch"]

_LONGEST_WAIT = 86400.0
# After SIGKILL a process normally vanishes at once; one stuck in uninterruptible sleep
# (a hung NFS read) may not. Waiting is still bounded: past this, join gives up on it.
KILL_WAIT = 10.0


def _logger() -> logging.Logger:
    """``spawnkit``'s logger; torch's, once the program has imported torch.

    A program ported from ``torch.multiprocessing`` may watch torch's logger for the stop
    messages (its tests do): with torch loaded they go where torch would put them.
    """
    if "torch" in sys.modules:
        return logging.getLogger("torch.multiprocessing.spawn")
    return logging.getLogger("spawnkit")


@final
class _Rank:
    __slots__ = (
        "ended",
        "ended_wall",
        "failure",
        "handle",
        "killed",
        "logs",
        "rank",
        "started",
        "started_wall",
        "status",
        "traceback",
        "value",
    )

    def __init__(self, rank: int, handle: WorkerHandle, logs: dict[str, str]) -> None:
        self.rank = rank
        self.handle = handle
        self.status: int | None = None
        self.killed = False
        self.value: Any = None
        self.logs = logs
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ended: float | None = None
        self.ended_wall: float | None = None
        # The rank's own failure, and when it happened (monotonic), for the root cause.
        self.failure: tuple[float, ProcessException] | None = None
        # The traceback of what the rank raised, as it reported it: also its stderr log's.
        self.traceback: str | None = None


@final
class ProcessContext:
    """A running job: N ranks that succeed together or fail together.

    Returned by ``spawnkit.spawn(..., join=False)``. Implements
    :class:`spawnkit.SpawnContext` for every backend.
    """

    def __init__(
        self,
        backend_name: str,
        backend: Backend,
        watch: ParentWatch,
        ranks: list[_Rank],
        grace_period: float,
        daemon: bool,
        *,
        timeout: float | None = None,
        output: OutputPlan | None = None,
        local: bool = True,
    ) -> None:
        self.backend_name = backend_name
        self._backend = backend
        self._watch = watch
        self._ranks = ranks
        self._grace = grace_period
        self.daemon = daemon
        self._failures: list[ProcessException] = []
        self._error: ProcessException | SpawnTimeoutError | ConfigError | None = None
        # A rank failed because the job's script has no main guard (see _fail).
        self._no_main_guard = False
        self._released = False
        self._lock = threading.RLock()
        # Written to wake a join() blocked in wait(): by terminate() from another thread,
        # and by the foreground signal handler, which must not raise inside join's
        # bookkeeping but have it raise at a safe point instead.
        self._wake_r, self._wake_w = _fds.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        PARENT_ONLY_FDS.update((self._wake_r, self._wake_w))
        # Reentrant: the signal handler's wake() may run in a thread that holds it. Once
        # the job is released the pipe is closed, and its numbers may name the program's
        # next files: nothing may be written to them then.
        self._wake_lock = threading.RLock()
        self._wake_open = True
        self._extra_wake: list[int] = []  # more pipes that wake join() (signal wakeup fd)
        self.interrupted: int | None = None
        self._processes: list[RankProcess] | None = None
        self._pid = os.getpid()  # a forked child gets a copy of this object, not the job
        self.held_signals: list[int] = []  # came while the ranks started (see launch)
        self.held_mask: Any = None
        self._started_wall = time.time()
        self._job_timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timed_out = False
        self._output = output
        self._local = local
        self._ended_wall: float | None = None
        #: Called with a line to show the user when spawnkit starts stopping ranks, and when
        #: SIGKILL follows (``spawnkit run`` prints them); ``None``: silent.
        self.on_stop: Callable[[str], None] | None = None
        _live.add(self)

    def __repr__(self) -> str:
        done = sum(r.status is not None for r in self._ranks)
        return (
            f"<ProcessContext backend={self.backend_name!r} nprocs={len(self._ranks)} "
            f"finished={done}>"
        )

    # -- public API ----------------------------------------------------------------------

    @property
    def processes(self) -> list[RankProcess]:
        """One ``multiprocessing.Process``-like view per rank, index = rank.

        ``pid``, ``exitcode``, ``is_alive()``, ``join(timeout)``, ``terminate()``,
        ``kill()``, ``name``, ``daemon`` and ``sentinel``, as code written for
        ``torch.multiprocessing`` uses them, whatever the backend.
        """
        if self._processes is None:
            self._processes = [RankProcess(self, r) for r in self._ranks]
        return list(self._processes)

    @property
    def sentinels(self) -> dict[int, int]:
        """``{sentinel: rank}`` for every local rank not yet seen ended, as torch's context.

        A sentinel is a descriptor that turns readable once its rank has ended (see
        ``multiprocessing.connection.wait``); empty once the job is over. A rank that runs
        elsewhere has none.
        """
        with self._lock:
            if not self._released:
                self._take_outcomes()
            found = {}
            for r in self._running():
                sentinel = getattr(r.handle, "sentinel", None)
                if isinstance(sentinel, int):
                    found[sentinel] = r.rank
            return found

    @property
    def error_files(self) -> list[str]:
        """Not kept: torch's temporary files of pickled tracebacks have no counterpart here."""
        raise AttributeError(
            "spawnkit keeps no error files (torch's context has one temporary file per rank "
            "for a traceback): a failure's exception carries the rank's traceback as "
            "remote_traceback, and report() tells how every rank ended"
        )

    @property
    def handles(self) -> list[WorkerHandle]:
        """The backend's own handles, index = rank."""
        return [r.handle for r in self._ranks]

    def pids(self) -> list[int]:
        """Process ids, index = rank; ``-1`` for a rank without a local pid."""
        return [-1 if r.handle.pid is None else r.handle.pid for r in self._ranks]

    def join(self, timeout: float | None = None, grace_period: float | None = None) -> bool:
        """Wait for the job.

        Returns ``True`` once every rank finished successfully, ``False`` if ``timeout``
        seconds passed first (call again to keep waiting); a negative ``timeout`` looks once
        without waiting, as torch's ``join(-1)`` does. On the first failure, waits up to
        ``grace_period`` for the other ranks to finish on their own (if given), stops the
        rest with SIGTERM, waits ``grace_period`` (default: the job's, 5 s), SIGKILLs what is
        left, and raises the failure.

        The job's own deadline (``spawn(..., timeout=...)``) is kept while ``join`` waits:
        once it passes, every rank still running is stopped as above and
        :class:`SpawnTimeoutError` raised.

        Raises:
            ProcessRaisedException: a rank raised; the original is the ``__cause__``.
            ProcessExitedException: a rank exited non-zero or died from a signal.
            SpawnTimeoutError: the job's deadline passed.
            JobTerminatedError: :meth:`terminate` stopped ranks that had not finished.
        """
        timeout = _at_least_zero(timeout)
        check_seconds("timeout", timeout)
        check_seconds("grace_period", grace_period)
        self._check_owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        expired = False
        while True:
            with self._lock:
                if self.interrupted is not None:
                    signum, self.interrupted = self.interrupted, None
                    raise Interrupted(signum)
                if self._error is None and self._failures:
                    self._stop(grace_period, after_failure=True)
                    self._fail()
                if self._error is None and self._past_deadline():
                    self._time_out()
                if self._error is not None:
                    raise self._error
                if self._all_ended():
                    self._release()
                    if any(r.killed and r.status != 0 for r in self._ranks):
                        raise JobTerminatedError(
                            "the job was stopped by terminate() before every rank finished; "
                            "its results are incomplete"
                        )
                    return True
            if expired:
                return False
            # Wait without the lock, so terminate() from another thread is never held up.
            until = deadline
            if self._deadline is not None and (until is None or self._deadline < until):
                until = self._deadline
            self._wait(until)
            expired = deadline is not None and time.monotonic() >= deadline

    def terminate(self, grace_period: float | None = None) -> None:
        """Stop every rank still running and its process group.

        SIGTERM first (a worker's ``finally`` blocks run), then after ``grace_period``
        seconds (default: the job's, 5 s) SIGKILL. Returns once every worker has ended, or
        after a bounded wait for one that cannot. Ranks stopped here are never reported as
        failures. Safe to call more than once and after the job ended.
        """
        check_seconds("grace_period", grace_period)
        if os.getpid() != self._pid:
            return  # a forked child's copy: the job is its parent's to stop
        self.wake()
        with self._lock:
            # A rank that already failed on its own is a failure, not a rank we stopped.
            self._collect(time.monotonic())
            if not self._all_ended():
                self._stop(grace_period, after_failure=False)
            self._release()

    def report(self) -> JobReport:
        """How the job is going or went: every rank's state, and the root cause of a failure.

        ``report().format()`` is the summary block that a failure's exception carries (as
        its ``report``) and that spawnkit logs when the job fails; ``report().as_dict()``
        the same as plain data.
        """
        with self._lock:
            failed = sorted(
                (r for r in self._ranks if r.failure is not None),
                key=lambda r: (r.failure[0] if r.failure else 0.0, r.rank),
            )
            if not self._all_ended():
                outcome = "running"
            elif self._timed_out:
                outcome = "timed out"
            elif failed:
                outcome = "failed"
            elif any(r.killed and r.status != 0 for r in self._ranks):
                outcome = "stopped"
            else:
                outcome = "succeeded"
            return JobReport(
                backend=self.backend_name,
                outcome=outcome,
                ranks=tuple(self._rank_report(r) for r in self._ranks),
                failed=tuple(r.rank for r in failed),
                started=self._started_wall,
                ended=self._ended_wall,
                timeout=self._job_timeout,
                unshown=0 if self._output is None else self._output.unshown_lines,
            )

    @staticmethod
    def _rank_report(r: _Rank) -> RankReport:
        status = r.status
        if status is None:
            state = "running"
        elif r.failure is not None:
            state = "failed"
        elif r.killed and status != 0:
            state = "stopped"
        else:
            state = "succeeded"
        error = None
        if r.failure is not None and isinstance(r.failure[1], ProcessRaisedException):
            error = _one_line(r.failure[1])
        return RankReport(
            rank=r.rank,
            state=state,
            pid=r.handle.pid,
            exit_code=status,
            signal=signal_name(-status) if status is not None and status < 0 else None,
            error=error,
            started=r.started_wall,
            ended=r.ended_wall,
            logs=dict(r.logs),
        )

    def results(self) -> list[Any]:
        """Wait for the job and return every rank's return value, index = rank.

        Raises what :meth:`join` raises.
        """
        self.join()
        return [r.value for r in self._ranks]

    def __enter__(self) -> ProcessContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def unhold(self) -> None:
        """End what ``launch(deliver=False)`` left held: unblock, then raise what came."""
        mask, self.held_mask = self.held_mask, None
        received, self.held_signals = self.held_signals, []
        _holding.unblock(mask)
        for signum in received:
            signal.raise_signal(signum)

    def _check_owner(self) -> None:
        if os.getpid() != self._pid:
            raise SpawnError(
                f"this job belongs to process {self._pid}; process {os.getpid()} is a fork of "
                "it and cannot wait for its ranks: join the job in the process that started it"
            )

    def _forget_in_fork(self) -> None:
        # In a fork of the job's process: the descriptors are closed already (they are
        # parent-only); nothing may read, write or close their numbers again, and a
        # released job touches no handle. No lock: a thread that held it at the fork does
        # not exist here.
        self._released = True
        self._wake_open = False

    def wake(self) -> None:
        """Make a ``join()`` blocked in another thread (or below a signal handler) look up."""
        with self._wake_lock:
            if not self._wake_open:
                return
            try:
                os.write(self._wake_w, b"!")
            except OSError:  # full: it is awake anyway
                pass

    def add_wake_fd(self, fd: int) -> None:
        """Also wake ``join()`` when ``fd`` (a non-blocking pipe's read end) is readable."""
        with self._wake_lock:
            self._extra_wake.append(fd)

    def remove_wake_fd(self, fd: int) -> None:
        with self._wake_lock:
            self._extra_wake.remove(fd)

    def interrupt(self, signum: int) -> None:
        """From a signal handler: have ``join()`` raise :class:`Interrupted` at a safe point."""
        self.interrupted = signum
        self.wake()

    # -- waiting ------------------------------------------------------------------------

    def _all_ended(self) -> bool:
        return all(r.status is not None for r in self._ranks)

    def _running(self) -> list[_Rank]:
        return [r for r in self._ranks if r.status is None]

    def _waitables(self) -> list[Any]:
        return [fd for r in self._running() for fd in r.handle.wait_fds()]

    @staticmethod
    def _timeout(deadline: float | None) -> float | None:
        # One wait is at most a day: the OS rejects longer ones, and an hour-long timeout
        # is just more of these.
        if deadline is None:
            return None
        return min(max(0.0, deadline - time.monotonic()), _LONGEST_WAIT)

    def _wait(self, deadline: float | None) -> bool:
        """Block until something happened or ``deadline``; False once the deadline passed."""
        with self._lock:
            if self._released:
                return True
            with self._wake_lock:
                wake = [self._wake_r, *self._extra_wake]
            waitables = [*self._waitables(), *wake]
        _wait_ready(waitables, self._timeout(deadline))
        with self._lock:
            if not self._released:
                self._drain_wake()
                self._take_outcomes()
        return deadline is None or time.monotonic() < deadline

    def _collect(self, deadline: float) -> None:
        """Wait up to ``deadline`` for the next event, then take every outcome there is."""
        with self._wake_lock:
            wake = [self._wake_r] if self._wake_open else []
        _wait_ready([*self._waitables(), *wake], self._timeout(deadline))
        self._drain_wake()
        self._take_outcomes()

    def _drain_wake(self) -> None:
        with self._wake_lock:
            if not self._wake_open:
                return
            for fd in (self._wake_r, *self._extra_wake):
                try:
                    while os.read(fd, 512):
                        pass
                except OSError:
                    pass

    def _take_outcomes(self) -> None:
        for r in self._running():
            outcome = r.handle.poll()
            if outcome is not None:
                self._ended(r, outcome)
            elif r.failure is None:
                self._early_error(r)

    def _early_error(self, r: _Rank) -> None:
        """Take a rank's error report as its failure as soon as it arrived whole.

        The process may take seconds more to exit (a non-daemon thread, a library's teardown
        at exit: gloo's takes 1-5 s), or never exit on its own. Its failure is known now,
        so the job stops at once, this rank with the others (its worker dies of the stop
        now that its report is out; see spawnkit._child).
        """
        early_report = getattr(r.handle, "early_report", None)
        report = early_report() if early_report is not None else None
        if report is None or report.kind != _wire.ERROR:
            return
        when, failure = self._raised(r, report.body)
        r.traceback = failure.remote_traceback
        self._failed(r, when, failure)

    def _wait_for_rank(self, r: _Rank, timeout: float | None) -> None:
        """Block until rank ``r`` ended or ``timeout`` passed (for ``RankProcess.join``)."""
        check_seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._take_outcomes()
                if r.status is not None or self._released:
                    return
                waitables: list[Any] = list(r.handle.wait_fds())
                with self._wake_lock:
                    if self._wake_open:
                        waitables.append(self._wake_r)
            if deadline is not None and time.monotonic() >= deadline:
                return
            _wait_ready(waitables, self._timeout(deadline))

    def _refresh(self) -> None:
        with self._lock:
            if not self._released:
                self._take_outcomes()

    def _wait_until(self, deadline: float, ranks: list[_Rank] | None = None) -> None:
        """Wait up to ``deadline`` until every rank (or every one of ``ranks``) has ended."""
        while any(r.status is None for r in (self._ranks if ranks is None else ranks)):
            if time.monotonic() >= deadline:
                return
            self._collect(deadline)

    # -- outcomes -----------------------------------------------------------------------

    def _ended(self, r: _Rank, outcome: Outcome) -> None:
        status = r.status = outcome.status
        r.ended, r.ended_wall = time.monotonic(), time.time()
        report, lost = outcome.report, outcome.lost
        kind = report.kind if report is not None else None
        if kind == _wire.ERROR:
            # Raised before any stop reached it: a failure even if spawnkit stopped it since.
            assert report is not None
            if r.failure is not None:
                return  # taken when the report arrived (_early_error)
            when, failure = self._raised(r, report.body)
            r.traceback = failure.remote_traceback
            self._failed(r, when, failure)
        elif kind == _wire.RESULT and (status == 0 or lost):
            assert report is not None
            self._take_value(r, report.body)
        elif not r.killed:
            if status == 0 and kind is None and outcome.started and not lost:
                return  # os._exit(0) after it ran: success without a value, as under torch
            self._failed(r, r.ended, self._exited(r, outcome))

    def _failed(self, r: _Rank, when: float, failure: ProcessException) -> None:
        r.failure = (when, failure)
        self._failures.append(failure)

    def _take_value(self, r: _Rank, body: bytes) -> None:
        try:
            r.value = pickle.loads(body)
        except BaseException as exc:  # noqa: BLE001 - the rank's result is its failure
            why = safe_str(exc, repr)
            failure = ProcessRaisedException(
                f"\n\n-- Process {r.rank} returned a value the parent cannot unpickle: {why}",
                r.rank,
                r.handle.pid,
                why,
            )
            self._failed(r, time.monotonic(), failure)

    def _raised(self, r: _Rank, body: bytes) -> tuple[float, ProcessRaisedException]:
        """The failure an ``ERROR`` report tells of, and when the rank raised (monotonic)."""
        when = time.monotonic()
        try:
            exc_bytes, text, *rest = pickle.loads(body)
        except BaseException as exc:  # noqa: BLE001 - a torn or foreign message
            exc_bytes, text, rest = None, f"(the error report could not be read: {exc!r})\n", []
        # The worker's clock is this machine's monotonic clock only for a local worker.
        if self._local and rest and isinstance(rest[0], float):
            when = min(when, rest[0])
        original: BaseException | None = None
        if exc_bytes is not None:
            try:
                original = pickle.loads(exc_bytes)
            except BaseException:  # noqa: BLE001 - not rebuildable here: the text still tells
                original = None
            if not isinstance(original, BaseException):
                original = None
        self._no_main_guard |= isinstance(original, NoMainGuard)
        msg = f"\n\n-- Process {r.rank} terminated with the following error:\n{text}"
        failure = ProcessRaisedException(msg, r.rank, r.handle.pid, text, original)
        if original is not None:
            # The message shows the text already: printed whole, the chain points at it.
            original.__cause__ = RemoteTraceback(text, shown_by=f"rank {r.rank}")
            failure.__cause__ = original
        return when, failure

    def _exited(self, r: _Rank, outcome: Outcome) -> ProcessExitedException:
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
                f"process {r.rank} terminated with signal {name}{because}",
                r.rank,
                pid,
                status,
                name,
            )
        msg = f"process {r.rank} terminated with exit code {status}"
        if not started and status == _wire.NO_MAIN_GUARD_STATUS:
            self._no_main_guard = True
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

    # -- stopping -----------------------------------------------------------------------

    def _stop(self, grace_period: float | None, *, after_failure: bool) -> None:
        grace = self._grace if grace_period is None else grace_period
        if after_failure and grace_period is not None:
            # For the ranks that have not failed to finish on their own. One that failed and
            # lingers (its report is in, its process still ending) is stopped with the rest.
            unfailed = [r for r in self._ranks if r.failure is None]
            self._wait_until(time.monotonic() + grace_period, unfailed)
        self._take_outcomes()
        targets = self._running()
        # A rank that failed and is still ending gets the same stop, but is not told of as
        # one: whether it is still there is a race with its own exit (torch's stop never
        # sees it), and the job's messages must not depend on that race.
        unfailed = [r for r in targets if r.failure is None]
        if unfailed:
            self._announce(
                f"stopping {_ranks(len(unfailed))} (SIGTERM, then SIGKILL after {grace:g} s)..."
            )
        # A rank the system will not let us signal: waiting for it to stop would only
        # pretend, and SIGKILL is refused the same way (see the end).
        refused: set[int] = set()
        for r in targets:
            r.killed = True
            if r.failure is not None:
                _logger().debug(
                    "Stopping process %s of rank %s, which failed", r.handle.pid, r.rank
                )
            elif r.handle.pid is None:
                _logger().warning("Stopping rank %s (a worker elsewhere), gracefully", r.rank)
            else:
                _logger().warning("Terminating process %s via signal SIGTERM", r.handle.pid)
            try:
                r.handle.stop()
            except PermissionError:
                refused.add(r.rank)
        signalled = [r for r in targets if r.rank not in refused]
        self._wait_until(time.monotonic() + grace, signalled)
        stubborn = [r.rank for r in signalled if r.status is None]
        if stubborn:
            self._announce(
                f"{_ranks(len(stubborn))} still running after {grace:g} s: SIGKILL to "
                + ", ".join(f"rank {rank}" for rank in stubborn)
            )
        # Also the ranks that ended meanwhile: a grandchild that ignored SIGTERM is still in
        # its dead parent's group, and that group id stays reserved while it is.
        unkillable: dict[int, tuple[_Rank, PermissionError]] = {}
        for r in targets:
            if r.status is None and r.handle.pid is None:
                _logger().warning("Rank %s did not stop in time; stopping it by force", r.rank)
            elif r.status is None:
                _logger().warning(
                    "Unable to shutdown process %s via SIGTERM , forcefully exiting via SIGKILL",
                    r.handle.pid,
                )
            try:
                r.handle.stop(force=True)
            except PermissionError as exc:
                unkillable[r.rank] = (r, exc)
        killed = [r for r in targets if r.rank not in unkillable]
        self._wait_until(time.monotonic() + KILL_WAIT, killed)
        for r in killed:
            if r.status is not None:
                continue
            # Not even SIGKILL ended it (uninterruptible sleep): give up on it rather than
            # wait without bound. It counts as killed by spawnkit.
            _logger().error(
                "process %s of rank %s survived a forced stop for %s s; no longer waiting for it",
                r.handle.pid,
                r.rank,
                KILL_WAIT,
            )
            r.status = -int(getattr(signal, "SIGKILL", signal.SIGTERM))
        if unkillable:
            raise _unstoppable(list(unkillable.values()))

    def _announce(self, line: str) -> None:
        if self.on_stop is not None:
            self.on_stop(line)

    def _fail(self) -> None:
        """The job failed: raise the earliest failure, with every other and the report."""
        if self._no_main_guard:
            # Not a rank's failure but the program's: every rank that imported the script
            # failed the same way, and what each worker's traceback shows (spawnkit's
            # import of the script, then its spawn() line) this process's shows too. So the
            # job raises the error once, as bad input.
            main = sys.modules.get("__main__")
            where = getattr(main, "__file__", None) or "the main module"
            self._release()
            self._error = ConfigError(no_main_guard_message(where))
            return
        self._failures.sort(key=lambda f: _failed_at(self._ranks, f))
        self._error = self._failures[0]
        self._error.failures = list(self._failures)
        self._release()
        self._attach_report(self._error)

    def _past_deadline(self) -> bool:
        return (
            self._deadline is not None
            and time.monotonic() >= self._deadline
            and not self._all_ended()
        )

    def _time_out(self) -> None:
        running = self._running()
        now = time.monotonic()
        self._timed_out = True
        self._stop(None, after_failure=False)
        assert self._job_timeout is not None
        ranks = ", ".join(f"rank {r.rank} (for {now - r.started:.2f} s)" for r in running)
        self._error = error = SpawnTimeoutError(
            f"the job's deadline of {self._job_timeout:g} s passed with {_ranks(len(running))} "
            f"still running: {ranks}; they were stopped (SIGTERM, then SIGKILL after "
            f"{self._grace:g} s). Raise timeout= if the job needs longer",
            self._job_timeout,
            tuple(r.rank for r in running),
        )
        self._release()
        self._attach_report(error)

    def _attach_report(self, error: ProcessException | SpawnTimeoutError) -> None:
        report = error.report = self.report()
        # Logged, not added to the exception as a note: the exception's text and notes are
        # torch's, and tests written against torch match them to their end (pytest.raises's
        # match= reads the notes too). Logged where torch logs its stop, so it shows above
        # the traceback: with no logging set up, Python prints warnings to stderr.
        _logger().warning("%s", report.format())

    def _release(self) -> None:
        if self._released or not self._all_ended():
            return
        self._released = True
        self._ended_wall = time.time()
        for r in self._ranks:
            try:
                r.handle.close()
            except Exception:  # noqa: BLE001 - one handle's trouble must not leak the others
                _logger().exception("closing the handle of rank %s failed", r.rank)
        if self._output is not None:
            # The ranks' last lines reach the console before the job's outcome is told.
            self._output.finish(
                tracebacks={r.rank: r.traceback for r in self._ranks if r.traceback}
            )
        with self._wake_lock:
            self._wake_open = False
            for fd in (self._wake_r, self._wake_w):
                PARENT_ONLY_FDS.discard(fd)
                os.close(fd)
        for fd in self._watch.private_fds():
            PARENT_ONLY_FDS.discard(fd)
        self._watch.close()
        self._backend.close()
        _live.discard(self)


@final
class RankProcess:
    """One rank of a job, as a ``multiprocessing.Process``-like object (``ctx.processes``).

    Reads go through the job, so the rank's outcome is recorded once, whoever looks first.
    """

    def __init__(self, ctx: ProcessContext, rank: _Rank) -> None:
        self._ctx = ctx
        self._rank = rank

    def __repr__(self) -> str:
        state = "started" if self.exitcode is None else f"stopped exitcode={self.exitcode}"
        return f"<RankProcess name={self.name!r} pid={self.pid} {state}>"

    @property
    def name(self) -> str:
        return f"spawnkit-rank-{self._rank.rank}"

    @property
    def pid(self) -> int | None:
        return self._rank.handle.pid

    @property
    def ident(self) -> int | None:
        return self.pid

    @property
    def daemon(self) -> bool:
        return self._ctx.daemon

    @property
    def sentinel(self) -> int:
        """A descriptor readable once the rank ended: a local worker's only."""
        sentinel = getattr(self._rank.handle, "sentinel", None)
        if not isinstance(sentinel, int):
            raise AttributeError(  # noqa: TRY004 - as for any missing attribute
                f"rank {self._rank.rank} of backend {self._ctx.backend_name!r} runs elsewhere "
                "and has no sentinel here; use join() or the job's join()"
            )
        return sentinel

    @property
    def exitcode(self) -> int | None:
        """The exit status once the rank ended (``-N``: signal ``N``), else ``None``."""
        self._ctx._refresh()
        return self._rank.status

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        """Wait until this rank ends, or ``timeout`` seconds pass (negative: look once)."""
        self._ctx._wait_for_rank(self._rank, _at_least_zero(timeout))

    def terminate(self) -> None:
        """SIGTERM to this rank (and its process group), as ``Process.terminate()``."""
        if self.exitcode is None:
            self._rank.handle.stop()

    def kill(self) -> None:
        """SIGKILL to this rank (and its process group), as ``Process.kill()``."""
        if self.exitcode is None:
            self._rank.handle.stop(force=True)


def _unstoppable(refused: list[tuple[_Rank, PermissionError]]) -> StopError:
    """The error for ranks the system would not let this process signal, the first named."""
    r, exc = refused[0]
    code = exc.errno or errno.EPERM
    others = ""
    if len(refused) > 1:
        others = (
            " (and " + ", ".join(f"rank {o.rank}, pid {o.handle.pid}" for o, _ in refused[1:]) + ")"
        )
    uid = f" (uid {os.geteuid()})" if hasattr(os, "geteuid") else ""
    return StopError(
        f"could not stop rank {r.rank}, pid {r.handle.pid}{others}: the system refused both "
        f"SIGTERM and SIGKILL ({errno.errorcode.get(code, code)}: {os.strerror(code)}), so it "
        f"is still running. This process{uid} may not signal it: it runs as another user, "
        "after this process gave up its rights (os.setuid) or the rank gained some (a setuid "
        "program). Keep the job's process able to signal its ranks (drop rights in the ranks, "
        f"not in the job), or stop it as a user who may: kill -KILL -- -{r.handle.pid}",
        r.rank,
        r.handle.pid,
        code,
        tuple(o.rank for o, _ in refused),
    )


def _ranks(n: int) -> str:
    return "1 rank" if n == 1 else f"{n} ranks"


def _failed_at(ranks: list[_Rank], failure: ProcessException) -> tuple[float, int]:
    for r in ranks:
        if r.failure is not None and r.failure[1] is failure:
            return (r.failure[0], r.rank)
    return (math.inf, failure.error_index)


def _one_line(failure: ProcessRaisedException) -> str:
    """``ValueError: bad input`` for the report, from the exception or the traceback's end."""
    if failure.exception is not None:
        text = f"{type(failure.exception).__name__}: {safe_str(failure.exception)}".rstrip(": ")
    else:
        tail = failure.remote_traceback.strip().splitlines()
        text = tail[-1] if tail else "an exception"
    first = text.splitlines()[0] if text else text
    return first if len(first) <= 200 else first[:197] + "..."


def _at_least_zero(timeout: float | None) -> float | None:
    """A negative wait as ``multiprocessing`` and torch take it: look once, do not wait.

    ``torch.distributed.elastic`` polls a job with ``join(-1)``. Anything that is not a
    finite number is left for :func:`check_seconds` to reject.
    """
    if (
        isinstance(timeout, (int, float))
        and not isinstance(timeout, bool)
        and -math.inf < timeout < 0
    ):
        return 0.0
    return timeout


def check_seconds(name: str, value: object) -> None:
    """Reject a timeout or grace period that is not a non-negative number of seconds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name} must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value):
        raise ConfigError(
            f"{name} must be a finite number of seconds, not {value!r}; "
            f"pass None to wait without a limit"
        )
    if value < 0:
        raise ConfigError(f"{name} must be >= 0 seconds, not {value!r}")


# Jobs whose workers still run. Strong references on purpose: a job the caller dropped
# without joining must still be stopped (daemon) or waited for (non-daemon) at exit.
_live: set[ProcessContext] = set()


def _forget_jobs_in_child() -> None:
    # Any fork of the job's process - a fork worker, the program's own os.fork() or
    # multiprocessing fork Process - starts without the parent's side of running jobs: a
    # lifeline write end kept there would hide the parent's death from the pipe watch, a
    # result pipe's read end would be read by nobody, and the child's exit must not wait
    # for ranks that are not its own.
    for fd in PARENT_ONLY_FDS:
        try:
            os.close(fd)
        except OSError:
            pass
    PARENT_ONLY_FDS.clear()
    for ctx in _live:
        ctx._forget_in_fork()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_jobs_in_child)


@atexit.register
def _at_exit() -> None:
    for ctx in list(_live):
        try:
            if ctx.daemon:
                ctx.terminate()
            else:
                while not ctx._all_ended():
                    ctx._wait(None)
                ctx._release()
        except Exception:  # noqa: BLE001, S110 - at exit there is nobody left to tell
            pass


def launch(
    backend_name: str,
    backend: Backend,
    watch: ParentWatch,
    jobs: Sequence[RankJob],
    grace_period: float,
    daemon: bool,
    *,
    envs: Sequence[Mapping[str, str]] | None = None,
    output: OutputPlan | None = None,
    timeout: float | None = None,
    faulthandler: bool = False,
    local: bool = True,
    deliver: bool = True,
) -> ProcessContext:
    """Start one rank per entry of ``jobs`` through ``backend`` and return the running job.

    A ``local`` backend's workers get the watch's descriptors, their output's (``output``)
    and the ones their arguments carry; a remote backend's get no descriptor and no pid.
    ``envs[rank]`` is set in rank ``rank``'s environment.

    Signals that arrive meanwhile go to the program's handlers once the job is recorded;
    with ``deliver=False`` they wait in :attr:`ProcessContext.held_signals` instead, for a
    caller that is about to wait for the job in the foreground.

    Every start call returns as soon as its worker exists, so ranks start in parallel. If
    one cannot start, the ranks already started are stopped and :class:`LaunchError` raised.
    """
    PARENT_ONLY_FDS.update(watch.private_fds())
    ctx = ProcessContext(
        backend_name,
        backend,
        watch,
        [],
        grace_period,
        daemon,
        timeout=timeout,
        output=output,
        local=local,
    )
    job_pid = os.getpid() if local else None
    held = _holding.hold()
    try:
        spec = WorkerSpec(
            rank=0,
            nprocs=len(jobs),
            job_pid=job_pid,
            parent_pid=job_pid,
            payload=None,
            target=None,
            fds=(),
            watch=watch.child_watch() if local else None,
            grace_period=grace_period,
            env={},
            sigmask=None if held.mask is None else tuple(sorted(int(s) for s in held.mask)),
            faulthandler=faulthandler and local,
            deadline=ctx._deadline,
        )
        _start_ranks(ctx, spec, jobs, envs, watch.fds() if local else ())
        if output is not None:
            output.start()
    except BaseException:
        _holding.release(held)  # a handler that raises now: its exception, this one chained
        raise
    try:
        ctx.held_signals = _holding.release(held, deliver=deliver)
        ctx.held_mask = held.mask
    except BaseException:
        # The program's own exception, from a signal that came while the ranks started:
        # as it would have been raised then, the ranks do not outlive it.
        ctx.terminate(grace_period=min(grace_period, 1.0))
        raise
    return ctx


def _start_ranks(
    ctx: ProcessContext,
    spec: WorkerSpec,
    jobs: Sequence[RankJob],
    envs: Sequence[Mapping[str, str]] | None,
    watch_fds: tuple[int, ...],
) -> None:
    """Start every rank of ``spec``'s job into ``ctx``; on a failure, stop what started."""
    output = ctx._output
    try:
        for rank, (payload, target, carried) in enumerate(jobs):
            streams: tuple[int, ...] = ()
            stream_fds: tuple[int, ...] = ()
            if output is not None:
                streams, stream_fds = output.open(rank)
            try:
                rank_spec = spec._replace(
                    rank=rank,
                    payload=payload,
                    target=target,
                    fds=(*watch_fds, *stream_fds, *carried) if ctx._local else (),
                    carried=len(carried) if ctx._local else 0,
                    streams=streams,
                    env=envs[rank] if envs is not None else {},
                )
                handle = ctx._backend.start(rank_spec, ctx.wake)
            finally:
                for fd in stream_fds:  # the worker has its copies
                    os.close(fd)
            logs = output.logs(rank) if output is not None else {}
            ctx._ranks.append(_Rank(rank, handle, logs))
    except BaseException as exc:
        ctx.terminate(grace_period=min(ctx._grace, 1.0))
        deadline, timeout = ctx._deadline, ctx._job_timeout
        if (
            isinstance(exc, (OSError, LaunchError))
            and deadline is not None
            and timeout is not None
            and time.monotonic() >= deadline
        ):
            # The backend bounded its start by spec.deadline: that the start failed is the
            # job's timeout, as it is for a backend that did not block and ran out of time.
            starting = len(ctx._ranks)
            error = SpawnTimeoutError(
                f"the job's deadline of {timeout:g} s passed while rank {starting} of "
                f"{spec.nprocs} was starting ({type(exc).__name__}: {exc}); the ranks started "
                "were stopped. Raise timeout= if the job needs longer",
                timeout,
                tuple(range(starting + 1)),
            )
            ctx._timed_out = True
            ctx._attach_report(error)
            raise error from exc
        # Only a start that failed is a LaunchError. Anything else - the program's own
        # exception from a signal handler, KeyboardInterrupt - comes out as it is.
        if not isinstance(exc, OSError):
            raise
        raise LaunchError(
            f"backend {ctx.backend_name!r} could not start rank {len(ctx._ranks)} of "
            f"{spec.nprocs}: {type(exc).__name__}: {exc}{_out_of_files(exc)}"
        ) from exc


def _out_of_files(exc: OSError) -> str:
    """What to do when starting a rank ran out of descriptors; else ``""``."""
    if exc.errno == errno.ENFILE:
        return (
            ". The system's table of open files is full (ENFILE): close files, or raise the "
            "system's limit (fs.file-max on Linux)"
        )
    if exc.errno != errno.EMFILE:
        return ""
    limit = ""
    if sys.platform != "win32":  # no such limit on Windows
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        shown = ["unlimited" if n == resource.RLIM_INFINITY else str(n) for n in (soft, hard)]
        limit = f"; RLIMIT_NOFILE: soft limit {shown[0]}, hard limit {shown[1]}"
    return (
        f". This process ran out of file descriptors (EMFILE{limit}); each running rank "
        "holds a few. Raise the soft limit (ulimit -n, or resource.setrlimit(resource."
        "RLIMIT_NOFILE, ...), up to the hard limit), or close descriptors the program no "
        "longer needs"
    )
