"""A running job's public face: :class:`ProcessContext`, its ranks as ``Process``-likes.

Core does join, terminate, errors and results once here, for every backend. Launching
(``_launch``), waiting (``_waiting``), a rank's outcome (``_outcome``) and stopping
(``_stopping``) each have a module of their own.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import multiprocessing.util  # noqa: F401 - before _at_exit is registered: see there
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, final

from . import _launch, _stopping
from ._errors import (
    ConfigError,
    Interrupted,
    InvalidArgumentError,
    JobTerminatedError,
    LaunchError,
    ProcessException,
    SpawnError,
    SpawnTimeoutError,
    no_main_guard_message,
)
from ._outcome import Rank, take_early_report, take_outcome
from ._report import JobReport
from ._signals import holding as _holding
from ._spec import PARENT_ONLY_FDS, WorkerSpec
from ._waiting import Waiter

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

    from ._launch import RankJob as RankJob  # noqa: PLC0414 - spawnkit._api takes it from here
    from ._output import OutputPlan
    from ._protocols import Backend, ParentWatch, WorkerHandle
    from ._restarts import Restarts

__all__ = ["ProcessContext", "RankProcess", "check_seconds", "launch"]

# After SIGKILL a process normally vanishes at once; one stuck in uninterruptible sleep
# (a hung NFS read) may not. Waiting is still bounded: past this, join gives up on it.
KILL_WAIT = 10.0


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
        grace_period: float,
        daemon: bool,
        *,
        timeout: float | None = None,
        output: OutputPlan | None = None,
        local: bool = True,
        jobs: Sequence[RankJob] = (),
        faulthandler: bool = False,
        restarts: Restarts | None = None,
    ) -> None:
        self.backend_name = backend_name
        self._backend = backend
        self._watch = watch
        self._ranks: list[Rank] = []
        self._grace = grace_period
        self.daemon = daemon
        self._error: SpawnError | None = None
        self._released = False
        self._lock = threading.RLock()
        self._waiter = Waiter(self._lock, self._look)
        # wake(): a join() blocked in another thread (or below a signal handler) looks up;
        # add_wake_fd(fd): a pipe's read end that wakes it too (the signal wakeup fd).
        self.wake, self.add_wake_fd = self._waiter.wake, self._waiter.add_fd
        self.remove_wake_fd = self._waiter.remove_fd
        self.interrupted: int | None = None
        self._processes: tuple[list[Rank], list[RankProcess]] | None = None
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
        self._jobs = jobs
        self._faulthandler = faulthandler
        # Attempts (see _restarts): the current one's number and start, the reports of
        # those that failed and were restarted, and when the next one starts, if it does.
        self._restarts = restarts
        self._attempt = 0
        self._attempt_started_wall = self._started_wall
        self._attempts: list[JobReport] = []
        self._restart_at: float | None = None
        self._announce_start = False
        self._attempt_closed = False
        self._closing = False  # terminate() was called: no attempt starts after it
        #: Called with a line to show the user when spawnkit starts stopping ranks, when
        #: SIGKILL follows, and when the job restarts (``spawnkit run`` prints them);
        #: ``None``: silent.
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
        ranks, cached = self._ranks, self._processes
        if cached is None or cached[0] is not ranks:  # (a new attempt has a new list)
            cached = self._processes = (ranks, [RankProcess(self, r) for r in ranks])
        return list(cached[1])

    @property
    def sentinels(self) -> dict[int, int]:
        """``{sentinel: rank}`` for every local rank not yet seen ended, as torch's context.

        A sentinel is a descriptor that turns readable once its rank has ended (see
        ``multiprocessing.connection.wait``); empty once the job is over, and while a
        restarting job waits out ``restart_delay`` (poll it with ``join(timeout)`` then). A
        rank that runs elsewhere has none.
        """
        with self._lock:
            self._look()
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
        # Also woken at the job's deadline, which _settled keeps once it has passed.
        until = deadline
        if self._deadline is not None and (until is None or self._deadline < until):
            until = self._deadline
        settled = lambda: self._settled(grace_period)  # noqa: E731
        while not self._waiter.until(settled, until, wake_at=lambda: self._restart_at):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def _settled(self, grace_period: float | None) -> bool:
        """Under the lock: whether the job is over and succeeded; raises how it ended else."""
        if self.interrupted is not None:
            signum, self.interrupted = self.interrupted, None
            raise Interrupted(signum)
        if self._error is None and self._restart_at is None and self._any_failed():
            self._stop(grace_period, after_failure=True)
            if not self._restart_scheduled():
                self._fail()
        if self._restart_at is not None:
            if self._past_deadline():
                self._cancel_restart()  # (a join() that came late): no attempt starts after
            elif time.monotonic() < self._restart_at:
                return False
            else:
                # At once when there is no delay: the job is never seen without ranks then.
                self._next_attempt()
                if self._error is None:  # else it was called off, and the job is over
                    self.wake()  # the wait in progress looks at the old attempt's fds
                    return False
        deadline = self._deadline
        if self._error is None and deadline is not None and time.monotonic() >= deadline:
            self._time_out()  # (once every rank has ended, nothing is left to time out)
        if self._error is not None:
            raise self._error
        if not self._all_ended():
            return False
        self._release()
        if any(r.stopped for r in self._ranks):
            raise JobTerminatedError(
                "the job was stopped by terminate() before every rank finished; "
                "its results are incomplete"
            )
        return True

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
        self._closing = True
        self.wake()
        with self._lock:
            if self._restart_at is not None:
                self._cancel_restart()
            # A rank that already failed on its own is a failure, not a rank we stopped.
            self._look()
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
            failed = self._failed()
            if not self._all_ended():
                outcome = "running"
            elif self._restart_at is not None:
                outcome = "restarting"
            elif self._timed_out:
                outcome = "timed out"
            elif failed:
                outcome = "failed"
            elif any(r.stopped for r in self._ranks):
                outcome = "stopped"
            else:
                outcome = "succeeded"
            return JobReport(
                backend=self.backend_name,
                outcome=outcome,
                ranks=tuple(r.report() for r in self._ranks),
                failed=tuple(r.rank for r in failed),
                started=self._started_wall,
                ended=self._ended_wall,
                timeout=self._job_timeout,
                unshown=0 if self._output is None else self._output.unshown_lines,
                attempt=self._attempt,
                # Between attempts the last one is still the current: not an earlier one yet.
                attempts=tuple(self._attempts[: -1 if self._restart_at is not None else None]),
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
        # In a fork of the job's process: a released job touches no handle. No lock: a
        # thread that held it at the fork does not exist here.
        self._released = True
        self._waiter.forget_in_fork()

    def interrupt(self, signum: int) -> None:
        """From a signal handler: have ``join()`` raise :class:`Interrupted` at a safe point."""
        self.interrupted = signum
        self.wake()

    # -- the ranks ----------------------------------------------------------------------

    def _any_failed(self) -> bool:
        return any(r.failure for r in self._ranks)

    def _all_ended(self) -> bool:
        return all(r.status is not None for r in self._ranks)

    def _running(self) -> list[Rank]:
        return [r for r in self._ranks if r.status is None]

    def _failed(self) -> list[Rank]:
        """The ranks that failed on their own, earliest first: the root cause is the first."""
        failed = [r for r in self._ranks if r.failure is not None]
        return sorted(failed, key=lambda r: (r.failure[0] if r.failure else 0.0, r.rank))

    def _look(self) -> list[int]:
        """Under the lock: take every rank's news; the descriptors that may bring more."""
        if self._released:
            return []
        fds: list[int] = []
        for r in self._running():
            outcome = r.handle.poll()
            if outcome is not None:
                take_outcome(r, outcome, local=self._local)
                continue
            if r.failure is None:
                take_early_report(r, local=self._local)
            fds += r.handle.wait_fds()
        return fds

    def _wait_ended(self, ranks: list[Rank], deadline: float) -> bool:
        return self._waiter.until(lambda: all(r.status is not None for r in ranks), deadline)

    def _refresh(self) -> None:
        with self._lock:
            self._look()

    # -- how the job ends ---------------------------------------------------------------

    def _stop(self, grace_period: float | None, *, after_failure: bool) -> None:
        grace = self._grace if grace_period is None else grace_period
        if after_failure and grace_period is not None:
            # For the ranks that have not failed to finish on their own. One that failed and
            # lingers (its report is in, its process still ending) is stopped with the rest.
            unfailed = [r for r in self._ranks if r.failure is None]
            self._wait_ended(unfailed, time.monotonic() + grace_period)
        self._look()
        announce = self.on_stop or (lambda line: None)
        _stopping.stop(self._running(), grace, KILL_WAIT, self._wait_ended, announce)

    def _fail(self) -> None:
        """The job failed: raise the earliest failure, with every other and the report."""
        if any(r.no_main_guard for r in self._ranks):
            # Not a rank's failure but the program's: every rank that imported the script
            # failed the same way, and what each worker's traceback shows (spawnkit's
            # import of the script, then its spawn() line) this process's shows too. So the
            # job raises the error once, as bad input.
            main = sys.modules.get("__main__")
            where = getattr(main, "__file__", None) or "the main module"
            self._release()
            self._error = ConfigError(no_main_guard_message(where))
            return
        failures = [r.failure[1] for r in self._failed() if r.failure is not None]
        self._error = failures[0]
        self._error.failures = failures
        self._release()
        self._attach_report(self._error)

    # -- restarts ------------------------------------------------------------------------

    def _restart_scheduled(self) -> bool:
        """After a failed attempt, all of whose ranks ended: whether another one will start.

        If so, the attempt is closed and recorded, and ``_restart_at`` says when.
        """
        delay = self._restart_delay()
        if delay is None:
            return False
        root = self._failed()[0]
        now = time.monotonic()
        what = f"attempt {self._attempt} failed (rank {root.rank} {root.report().describe()})"
        if self._deadline is not None and now + delay >= self._deadline:
            self._say(f"{what}; no restart: the job's deadline passes first")
            return False
        assert self._restarts is not None
        self._close_attempt()
        self._attempts.append(self._attempt_report())
        self._say(
            f"{what}; restarting in {delay:g} s "
            f"(restart {self._attempt + 1} of {self._restarts.policy.max_restarts})"
        )
        self._restart_at = now + delay
        self._announce_start = delay > 0  # else the line above says it starts now
        return True

    def _restart_delay(self) -> float | None:
        """The wait before the next attempt, if the failed one may restart; else ``None``."""
        restarts = self._restarts
        if restarts is None or self._closing or self._attempt >= restarts.policy.max_restarts:
            return None
        root = self._failed()[0]
        assert root.failure is not None
        if (
            not self._all_ended()  # a rank the stop could not end (logged): none beside it
            or any(r.no_main_guard for r in self._ranks)  # the program's: it would recur
            or root.asked_to_stop  # stopped through its RankProcess, as terminate() stops
        ):
            return None
        try:
            if not restarts.policy.restartable(root.failure[1]):
                return None
            return restarts.policy.delay_before(self._attempt + 1)
        except Exception:  # noqa: BLE001 - the user's code: logged, and the failure raised
            _stopping.logger().exception(
                "the job is not restarted: the restart policy raised on the failure of rank %s",
                root.rank,
            )
            return None

    def _next_attempt(self) -> None:
        """Start the attempt :meth:`_restart_scheduled` planned."""
        assert self._restarts is not None
        number = self._attempt + 1
        try:
            attempt = self._restarts.make(number)
        except Exception as exc:
            if self._restart_at is None:
                raise  # called off meanwhile: the last attempt's failure is the job's
            self._cancel_restart()
            # Every later join() raises it too; the report keeps the attempts and failure.
            self._error = LaunchError(f"the job's attempt {number} could not start: {exc}")
            raise self._error from exc
        except BaseException:
            if self._restart_at is not None:
                self._cancel_restart()  # the last attempt's failure stays the job's
            raise
        # While the attempt was made (a backend may take seconds), the restart may have been
        # called off: by terminate() (from a signal handler too, in this thread), a signal to
        # the foreground, or the deadline. Then it never starts.
        if self._restart_at is None or self._closing or self.interrupted is not None:
            attempt.backend.close()
            if self._restart_at is not None:
                self._cancel_restart()
            return
        if self._past_deadline():
            # The backend took the rest of the job's time to get ready (a cluster that
            # could not place the ranks): no attempt starts after the deadline.
            attempt.backend.close()
            self._cancel_restart()
            return
        self._restart_at = None
        self._attempt = number
        self._attempt_started_wall = time.time()
        self._backend, self._output = attempt.backend, attempt.output
        self._attempt_closed = False
        self._start(attempt.envs, deliver=True)
        if self._announce_start:
            self._say(f"attempt {self._attempt} started")

    def _start(self, envs: Sequence[Mapping[str, str]] | None, *, deliver: bool) -> None:
        """Start the current attempt's ranks (see :func:`launch`)."""
        local, grace_period, watch = self._local, self._grace, self._watch
        job_pid = os.getpid() if local else None
        held = _holding.hold()
        try:
            spec = WorkerSpec(
                rank=0,
                nprocs=len(self._jobs),
                job_pid=job_pid,
                parent_pid=job_pid,
                payload=None,
                target=None,
                fds=(),
                watch=watch.child_watch() if local else None,
                grace_period=grace_period,
                env={},
                sigmask=None if held.mask is None else tuple(sorted(int(s) for s in held.mask)),
                faulthandler=self._faulthandler and local,
                deadline=self._deadline,
            )
            watch_fds = watch.fds() if local else ()
            # The ranks are published whole (processes, pids() read them without the lock).
            ranks: list[Rank] = []
            try:
                _launch.start_ranks(
                    ranks,
                    self.backend_name,
                    self._backend,
                    spec,
                    self._jobs,
                    envs,
                    watch_fds,
                    self._output,
                    self.wake,
                )
            except BaseException as exc:
                self._ranks = ranks  # those started: stopped now
                self.terminate(grace_period=min(grace_period, 1.0))
                started, deadline = len(ranks), self._deadline or math.inf
                error = _launch.failed_launch(
                    exc, self.backend_name, started, len(self._jobs), deadline, self._job_timeout
                )
                if error is None:
                    raise
                if isinstance(error, SpawnTimeoutError):
                    self._timed_out = True
                    self._attach_report(error)
                self._error = error  # a later join() of a restarted job raises it again
                raise error from exc
            self._ranks = ranks
            if self._output is not None:
                self._output.start()
        except BaseException:
            _holding.release(held)  # a handler that raises now: its exception, this one chained
            raise
        try:
            received = _holding.release(held, deliver=deliver)
            if not deliver:
                self.held_signals, self.held_mask = received, held.mask
        except BaseException:
            # The program's own exception, from a signal that came while the ranks started:
            # as it would have been raised then, the ranks do not outlive it.
            self.terminate(grace_period=min(grace_period, 1.0))
            raise

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _cancel_restart(self) -> None:
        """Between attempts: no next one; the failure that ended the last is the job's."""
        self._restart_at = None
        self._attempts.pop()  # the last attempt is the current one again
        self._fail()

    def _attempt_report(self) -> JobReport:
        """The report of the attempt that just failed, as one of the job's earlier ones."""
        now = self.report()
        return dataclasses.replace(
            now, started=self._attempt_started_wall, ended=time.time(), attempts=()
        )

    def _say(self, line: str) -> None:
        _stopping.logger().warning("%s", line)
        if self.on_stop is not None:
            self.on_stop(line)

    def _time_out(self) -> None:
        running = self._running()
        if not running:
            return
        now = time.monotonic()
        self._timed_out = True
        self._stop(None, after_failure=False)
        assert self._job_timeout is not None
        ranks = ", ".join(f"rank {r.rank} (for {now - r.started:.2f} s)" for r in running)
        n = "1 rank" if len(running) == 1 else f"{len(running)} ranks"
        self._error = error = SpawnTimeoutError(
            f"the job's deadline of {self._job_timeout:g} s passed with {n} still running: "
            f"{ranks}; they were stopped (SIGTERM, then SIGKILL after {self._grace:g} s). "
            "Raise timeout= if the job needs longer",
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
        _stopping.logger().warning("%s", report.format())

    def _close_attempt(self) -> None:
        """Once every rank of the attempt ended: close its handles, output and backend."""
        if self._attempt_closed:
            return
        self._attempt_closed = True
        for r in self._ranks:
            try:
                r.handle.close()
            except Exception:  # noqa: BLE001 - one handle's trouble must not leak the others
                _stopping.logger().exception("closing the handle of rank %s failed", r.rank)
        if self._output is not None:
            # The ranks' last lines reach the console before the job's outcome is told.
            self._output.finish(
                tracebacks={r.rank: r.traceback for r in self._ranks if r.traceback}
            )
        self._backend.close()

    def _release(self) -> None:
        if self._released or not self._all_ended():
            return
        self._released = True
        self._ended_wall = time.time()
        self._close_attempt()
        self._waiter.close()
        for fd in self._watch.private_fds():
            PARENT_ONLY_FDS.discard(fd)
        self._watch.close()
        _live.discard(self)


@final
class RankProcess:
    """One rank of a job, as a ``multiprocessing.Process``-like object (``ctx.processes``).

    Reads go through the job, so the rank's outcome is recorded once, whoever looks first.
    """

    def __init__(self, ctx: ProcessContext, rank: Rank) -> None:
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

    ident = pid

    @property
    def daemon(self) -> bool:
        return self._ctx.daemon

    @property
    def sentinel(self) -> int:
        """A descriptor readable once the rank ended: a local worker's only."""
        if self._rank not in self._ctx._ranks:
            # Its descriptor was closed with its attempt, and its number may be reused.
            raise ValueError(
                f"rank {self._rank.rank} of an earlier attempt of the job ended and was "
                "released; ctx.processes has the current attempt's ranks"
            )
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
        timeout = _at_least_zero(timeout)
        check_seconds("timeout", timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        ctx, r = self._ctx, self._rank
        ctx._waiter.until(lambda: r.status is not None or ctx._released, deadline)

    def terminate(self) -> None:
        """SIGTERM to this rank (and its process group), as ``Process.terminate()``."""
        if self.exitcode is None:
            self._rank.asked_to_stop = True
            self._rank.handle.stop()

    def kill(self) -> None:
        """SIGKILL to this rank (and its process group), as ``Process.kill()``."""
        if self.exitcode is None:
            self._rank.asked_to_stop = True
            self._rank.handle.stop(force=True)


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


# Registered after multiprocessing's exit handler (multiprocessing.util, imported above),
# so it runs first, as atexit runs the last registered first: multiprocessing's would join a
# `fork` or `spawn` daemon job's ranks after a SIGTERM that they outlive.
@atexit.register
def _at_exit() -> None:
    for ctx in list(_live):
        try:
            if ctx.daemon:
                ctx.terminate()
            else:
                ctx._waiter.until(ctx._all_ended, None)
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
    restarts: Restarts | None = None,
) -> ProcessContext:
    """Start one rank per entry of ``jobs`` through ``backend`` and return the running job.

    Signals that arrive meanwhile go to the program's handlers once the job is recorded;
    with ``deliver=False`` they wait in :attr:`ProcessContext.held_signals` instead, for a
    caller about to wait in the foreground. If a rank cannot start, those started are stopped.
    ``restarts`` makes the job's later attempts, when a failure restarts it.
    """
    PARENT_ONLY_FDS.update(watch.private_fds())
    ctx = ProcessContext(
        backend_name,
        backend,
        watch,
        grace_period,
        daemon,
        timeout=timeout,
        output=output,
        local=local,
        jobs=jobs,
        faulthandler=faulthandler,
        restarts=restarts,
    )
    ctx._start(envs, deliver=deliver)
    return ctx
