"""The one implementation of a running job: launch, join, terminate, errors and results.

Every backend goes through here; a backend only starts processes and hands back handles.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import wait as _wait_ready
from typing import TYPE_CHECKING, Any, final

from . import _fds, _wire
from ._errors import (
    ConfigError,
    InvalidArgumentError,
    JobTerminatedError,
    LaunchError,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    RemoteTraceback,
    SpawnError,
)
from ._signals import holding as _holding
from ._signals.foreground import Interrupted
from ._spec import PARENT_ONLY_FDS, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._protocols import Backend, ParentWatch, WorkerHandle
    from ._wire import Outcome

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


def signal_name(signum: int) -> str:
    """``"SIGKILL"``; real-time signals as ``"SIGRTMIN+3"``; else ``"signal 99"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        low, high = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1)
        if low <= signum <= high:
            return f"SIGRTMIN+{signum - low}"
        return f"signal {signum}"


@final
class _Rank:
    __slots__ = ("handle", "killed", "rank", "status", "value")

    def __init__(self, rank: int, handle: WorkerHandle) -> None:
        self.rank = rank
        self.handle = handle
        self.status: int | None = None
        self.killed = False
        self.value: Any = None


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
    ) -> None:
        self.backend_name = backend_name
        self._backend = backend
        self._watch = watch
        self._ranks = ranks
        self._grace = grace_period
        self.daemon = daemon
        self._failures: list[ProcessException] = []
        self._error: ProcessException | None = None
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
    def handles(self) -> list[WorkerHandle]:
        """The backend's own handles, index = rank."""
        return [r.handle for r in self._ranks]

    def pids(self) -> list[int]:
        """Process ids, index = rank; ``-1`` for a rank without a local pid."""
        return [-1 if r.handle.pid is None else r.handle.pid for r in self._ranks]

    def join(self, timeout: float | None = None, grace_period: float | None = None) -> bool:
        """Wait for the job.

        Returns ``True`` once every rank finished successfully, ``False`` if ``timeout``
        seconds passed first (call again to keep waiting). On the first failure, waits up to
        ``grace_period`` for the other ranks to finish on their own (if given), stops the
        rest with SIGTERM, waits ``grace_period`` (default: the job's, 5 s), SIGKILLs what is
        left, and raises the failure.

        Raises:
            ProcessRaisedException: a rank raised; the original is the ``__cause__``.
            ProcessExitedException: a rank exited non-zero or died from a signal.
            JobTerminatedError: :meth:`terminate` stopped ranks that had not finished.
        """
        check_seconds("timeout", timeout)
        check_seconds("grace_period", grace_period)
        self._check_owner()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self.interrupted is not None:
                    signum, self.interrupted = self.interrupted, None
                    raise Interrupted(signum)
                if self._error is None and self._failures:
                    self._stop(grace_period, after_failure=True)
                    self._error = self._failures[0]
                    self._error.failures = list(self._failures)
                    self._release()
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
            # Wait without the lock, so terminate() from another thread is never held up.
            if not self._wait(deadline):
                return False

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

    def _wait_until(self, deadline: float) -> None:
        while self._running() and time.monotonic() < deadline:
            self._collect(deadline)

    # -- outcomes -----------------------------------------------------------------------

    def _ended(self, r: _Rank, outcome: Outcome) -> None:
        status = r.status = outcome.status
        report, lost = outcome.report, outcome.lost
        kind = report.kind if report is not None else None
        if kind == _wire.ERROR:
            # Raised before any stop reached it: a failure even if spawnkit stopped it since.
            assert report is not None
            self._failures.append(self._raised(r, report.body))
        elif kind == _wire.RESULT and (status == 0 or lost):
            assert report is not None
            self._take_value(r, report.body)
        elif not r.killed:
            if status == 0 and kind is None and outcome.started and not lost:
                return  # os._exit(0) after it ran: success without a value, as under torch
            self._failures.append(self._exited(r, outcome))

    def _take_value(self, r: _Rank, body: bytes) -> None:
        try:
            r.value = pickle.loads(body)
        except BaseException as exc:  # noqa: BLE001 - the rank's result is its failure
            self._failures.append(
                ProcessRaisedException(
                    f"\n\n-- Process {r.rank} returned a value the parent cannot unpickle: {exc!r}",
                    r.rank,
                    r.handle.pid,
                    repr(exc),
                ),
            )

    def _raised(self, r: _Rank, body: bytes) -> ProcessRaisedException:
        try:
            exc_bytes, text = pickle.loads(body)
        except BaseException as exc:  # noqa: BLE001 - a torn or foreign message
            exc_bytes, text = None, f"(the error report could not be read: {exc!r})\n"
        original: BaseException | None = None
        if exc_bytes is not None:
            try:
                original = pickle.loads(exc_bytes)
            except BaseException:  # noqa: BLE001 - not rebuildable here: the text still tells
                original = None
            if not isinstance(original, BaseException):
                original = None
        msg = f"\n\n-- Process {r.rank} terminated with the following error:\n{text}"
        failure = ProcessRaisedException(msg, r.rank, r.handle.pid, text, original)
        if original is not None:
            original.__cause__ = RemoteTraceback(text)
            failure.__cause__ = original
        return failure

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
            self._wait_until(time.monotonic() + grace_period)
        self._take_outcomes()
        targets = self._running()
        for r in targets:
            r.killed = True
            if r.handle.pid is None:
                _logger().warning("Stopping rank %s (a worker elsewhere), gracefully", r.rank)
            else:
                _logger().warning("Terminating process %s via signal SIGTERM", r.handle.pid)
            r.handle.stop()
        self._wait_until(time.monotonic() + grace)
        # Also the ranks that ended meanwhile: a grandchild that ignored SIGTERM is still in
        # its dead parent's group, and that group id stays reserved while it is.
        for r in targets:
            if r.status is None and r.handle.pid is None:
                _logger().warning("Rank %s did not stop in time; stopping it by force", r.rank)
            elif r.status is None:
                _logger().warning(
                    "Unable to shutdown process %s via SIGTERM , forcefully exiting via SIGKILL",
                    r.handle.pid,
                )
            r.handle.stop(force=True)
        self._wait_until(time.monotonic() + KILL_WAIT)
        for r in self._running():
            # Not even SIGKILL ended it (uninterruptible sleep): give up on it rather than
            # wait without bound. It counts as killed by spawnkit.
            _logger().error(
                "process %s of rank %s survived a forced stop for %s s; no longer waiting for it",
                r.handle.pid,
                r.rank,
                KILL_WAIT,
            )
            r.status = -int(getattr(signal, "SIGKILL", signal.SIGTERM))

    def _release(self) -> None:
        if self._released or not self._all_ended():
            return
        self._released = True
        for r in self._ranks:
            try:
                r.handle.close()
            except Exception:  # noqa: BLE001 - one handle's trouble must not leak the others
                _logger().exception("closing the handle of rank %s failed", r.rank)
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
        """Wait until this rank ends, or ``timeout`` seconds pass."""
        self._ctx._wait_for_rank(self._rank, timeout)

    def terminate(self) -> None:
        """SIGTERM to this rank (and its process group), as ``Process.terminate()``."""
        if self.exitcode is None:
            self._rank.handle.stop()

    def kill(self) -> None:
        """SIGKILL to this rank (and its process group), as ``Process.kill()``."""
        if self.exitcode is None:
            self._rank.handle.stop(force=True)


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
    nprocs: int,
    payload: bytes | None,
    target: tuple[Callable[..., Any], tuple[Any, ...]] | None,
    grace_period: float,
    daemon: bool,
    carried: tuple[int, ...] = (),
    *,
    local: bool = True,
    deliver: bool = True,
) -> ProcessContext:
    """Start ``nprocs`` ranks through ``backend`` and return the running job.

    A ``local`` backend's workers get the watch's descriptors and the ones the job's
    arguments carry (``carried``); a remote backend's get no descriptor and no pid.

    Signals that arrive meanwhile go to the program's handlers once the job is recorded;
    with ``deliver=False`` they wait in :attr:`ProcessContext.held_signals` instead, for a
    caller that is about to wait for the job in the foreground.

    Every start call returns as soon as its worker exists, so ranks start in parallel. If
    one cannot start, the ranks already started are stopped and :class:`LaunchError` raised.
    """
    PARENT_ONLY_FDS.update(watch.private_fds())
    ctx = ProcessContext(backend_name, backend, watch, [], grace_period, daemon)
    job_pid = os.getpid() if local else None
    held = _holding.hold()
    try:
        spec = WorkerSpec(
            rank=0,
            nprocs=nprocs,
            job_pid=job_pid,
            parent_pid=job_pid,
            payload=payload,
            target=target,
            fds=(*watch.fds(), *carried) if local else (),
            watch=watch.child_watch() if local else None,
            grace_period=grace_period,
            env={},
            carried=len(carried) if local else 0,
            sigmask=None if held.mask is None else tuple(sorted(int(s) for s in held.mask)),
        )
        _start_ranks(ctx, spec)
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


def _start_ranks(ctx: ProcessContext, spec: WorkerSpec) -> None:
    """Start every rank of ``spec``'s job into ``ctx``; on a failure, stop what started."""
    try:
        for rank in range(spec.nprocs):
            handle = ctx._backend.start(spec._replace(rank=rank), ctx.wake)
            ctx._ranks.append(_Rank(rank, handle))
    except BaseException as exc:
        ctx.terminate(grace_period=min(ctx._grace, 1.0))
        # Only a start that failed is a LaunchError. Anything else - the program's own
        # exception from a signal handler, KeyboardInterrupt - comes out as it is.
        if not isinstance(exc, OSError):
            raise
        raise LaunchError(
            f"backend {ctx.backend_name!r} could not start rank {len(ctx._ranks)} of "
            f"{spec.nprocs}: {type(exc).__name__}: {exc}"
        ) from exc
