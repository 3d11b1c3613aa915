"""Local workers: a process on this machine, its result channel and its process group.

The building block of every local backend. A :class:`LocalBackend` only starts a process
(:meth:`LocalBackend.start_process`) and hands back a small
:class:`~spawnkit.plugin.ProcessHandle`; :class:`LocalWorker` adds what core's contract asks
of a handle: the outcome read from the worker's result channel, stopping its process group,
and stopping what the worker left in that group once it ended.
"""

from __future__ import annotations

import abc
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, final

from . import _fds, _wire
from ._spec import PARENT_ONLY_FDS
from ._tree import group_has_members, signal_process_group

if TYPE_CHECKING:
    from ._protocols import ProcessHandle
    from ._spec import WorkerSpec

__all__ = ["LocalBackend", "LocalWorker"]

_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL


class LocalBackend(abc.ABC):
    """Base class of a backend whose workers are processes on this machine.

    A subclass implements :meth:`start_process`: start a process that calls
    :func:`spawnkit.run_worker` with the spec it is given, forwarding every descriptor in
    ``spec.fds``, and return a :class:`~spawnkit.plugin.ProcessHandle`. The base class
    creates each rank's result channel and wraps the process in a :class:`LocalWorker`.
    """

    def start(self, spec: WorkerSpec, notify: Callable[[], None]) -> LocalWorker:
        """Start ``spec``'s rank as a local process (the contract's ``Backend.start``)."""
        read_end, write_end = _fds.pipe()
        PARENT_ONLY_FDS.add(read_end)
        inbox = _wire.Inbox(read_end)
        try:
            try:
                process = self.start_process(spec.with_result_fd(write_end))
            finally:
                os.close(write_end)  # the worker has its copy: its end-of-file is ours
        except BaseException:
            _close_inbox(inbox)
            raise
        return LocalWorker(process, inbox, spec.grace_period)

    @abc.abstractmethod
    def start_process(self, spec: WorkerSpec) -> ProcessHandle:
        """Start one process that calls :func:`spawnkit.run_worker` with ``spec``.

        Must return without waiting for the worker to finish or even to be ready, so that
        ranks start in parallel. Must forward every descriptor in ``spec.fds`` (calling
        ``spec.with_fds`` where the numbers change). Raises :class:`spawnkit.LaunchError`
        (or any ``OSError``) if the process could not be started.
        """

    def close(self) -> None:  # noqa: B027 - optional for subclasses
        """The job is over; release what :meth:`start_process` shared between ranks."""


def _close_inbox(inbox: _wire.Inbox) -> None:
    # Exactly once: a second close could hit a descriptor the program has opened since.
    if inbox.fd < 0:
        return
    PARENT_ONLY_FDS.discard(inbox.fd)
    try:
        os.close(inbox.fd)
    except OSError:
        pass
    inbox.fd = -1
    inbox.eof = True


@final
class LocalWorker:
    """A local process as core's :class:`~spawnkit.plugin.WorkerHandle`."""

    def __init__(self, process: ProcessHandle, inbox: _wire.Inbox, grace_period: float) -> None:
        self.process = process
        self._inbox = inbox
        self._grace = grace_period
        self._ended = False
        # When what the worker left in its process group gets SIGKILL; None: nothing left.
        self._group_deadline: float | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<LocalWorker pid={self.pid} ended={self._ended}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def sentinel(self) -> int:
        """The process's own sentinel, for code that waits on it (``Process.sentinel``)."""
        return self.process.sentinel

    def wait_fds(self) -> tuple[int, ...]:
        if self._inbox.eof:
            return (self.process.sentinel,)
        return (self.process.sentinel, self._inbox.fd)

    def poll(self) -> _wire.Outcome | None:
        self._inbox.pump()
        status = self.process.poll()
        if status is None:
            return None
        self._ended = True
        self._inbox.pump()  # whatever the worker wrote before it exited is in the pipe now
        started, message = self._inbox.started, self._inbox.message()
        _close_inbox(self._inbox)
        self._stop_leftovers()
        report = None if message is None else _wire.Report(message[0], message[1], status)
        # LosesStatus by its attribute: cheaper than isinstance() of the protocol.
        lost = getattr(self.process, "status_lost", None)
        return _wire.Outcome(status, report, started=started, lost=lost)

    def early_report(self) -> _wire.Report | None:
        """The worker's outcome once it arrived whole, while its process may still run."""
        if self._ended:
            return None
        self._inbox.pump()
        message = self._inbox.message()
        if message is None:
            return None
        return _wire.Report(message[0], message[1], 1 if message[0] == _wire.ERROR else 0)

    def stop(self, force: bool = False) -> None:
        pid = self.process.pid
        if pid is None or self._closed:
            return
        if force:
            signal_process_group(pid, _SIGKILL, reaped=self._ended)
            return
        signal_process_group(pid, signal.SIGTERM, reaped=self._ended)
        # A worker stopped by job control (SIGTTIN from a read of the terminal, SIGSTOP)
        # acts on SIGTERM only once it runs again.
        if hasattr(signal, "SIGCONT"):
            signal_process_group(pid, signal.SIGCONT, reaped=self._ended)

    def _stop_leftovers(self) -> None:
        """The worker has ended: what it started in its process group goes too.

        SIGTERM now, SIGKILL once the grace period has passed (see :meth:`close`): a
        grandchild must not outlive its rank, even a rank that succeeded, or it would
        outlive the job as well.
        """
        pid = self.process.pid
        if pid is None or not group_has_members(pid):
            return
        self.stop()
        self._group_deadline = time.monotonic() + self._grace

    def close(self) -> None:
        """Wait (bounded by the grace period) until the worker's group is empty; release."""
        if self._closed:
            return
        pid = self.process.pid
        if self._group_deadline is not None and pid is not None:
            while group_has_members(pid) and time.monotonic() < self._group_deadline:
                time.sleep(0.02)  # each look may read the whole process table
            if group_has_members(pid):
                self.stop(force=True)
            self._group_deadline = None
        self._closed = True
        _close_inbox(self._inbox)
        self.process.close()
