"""The contracts between core, backends and parent watches, as structural protocols.

A plugin type-checks against these without importing a base class: it only has to have the
right methods. Core owns every semantic (join, terminate, errors, results); a backend only
turns a :class:`~spawnkit.WorkerSpec` into a running worker and a :class:`WorkerHandle`
that hands core the worker's :class:`~spawnkit.plugin.Outcome` and stops it on request.
Local backends implement the smaller :class:`ProcessHandle` through
:class:`spawnkit.plugin.LocalBackend`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

    from ._spec import WorkerSpec
    from ._wire import Outcome, Report

__all__ = [
    "Backend",
    "LosesStatus",
    "ParentWatch",
    "ProcessHandle",
    "ReportsEarly",
    "SpawnContext",
    "WorkerHandle",
]


@runtime_checkable
class WorkerHandle(Protocol):
    """What core needs of one started worker, wherever it runs.

    Core waits until one of :meth:`wait_fds` is readable or the ``notify`` function the
    backend got with the spec is called, then asks :meth:`poll`. A local process (see
    :class:`spawnkit.plugin.LocalBackend`, which implements all of this) offers descriptors;
    a remote worker calls ``notify`` from its engine's completion callback. Optional: an
    ``early_report`` method (see :class:`ReportsEarly`).
    """

    @property
    def pid(self) -> int | None:
        """The worker's process id on this machine, or ``None`` if it has none here.

        Stays readable after :meth:`close`.
        """

    def wait_fds(self) -> Sequence[int]:
        """Descriptors that turn readable when :meth:`poll` may have news; may be empty.

        Asked again before every wait, so the set may change as the worker runs.
        """

    def poll(self) -> Outcome | None:
        """How the worker ended, once it has, else ``None``; never blocks.

        Must reap the process if it is a local child. Once it returned an outcome, it is
        not called again.
        """

    def stop(self, force: bool = False) -> None:
        """Ask the worker to stop: gracefully, or at once with ``force``; never raises.

        Graceful is SIGTERM to a local worker's process group (its ``finally`` blocks
        run), forced is SIGKILL; a remote engine maps them to its cancel and kill. It may
        come after the worker ended (a local worker's group may still hold what it
        started): a handle whose worker is gone does nothing then.
        """

    def close(self) -> None:
        """Release the handle's resources; called once, after the worker ended."""


@runtime_checkable
class Backend(Protocol):
    """Starts workers. Created once per job with the job's backend options."""

    def start(self, spec: WorkerSpec, notify: Callable[[], None]) -> WorkerHandle:
        """Start one worker that runs ``spec``'s rank, and return its handle.

        A local backend's process calls :func:`spawnkit.run_worker`; a worker hosted in
        another process calls :func:`spawnkit.plugin.run_rank` and carries the report
        home. ``notify`` may be called from any thread, any number of times, whenever
        :meth:`WorkerHandle.poll` may have news that no descriptor signals.

        Must return without waiting for the worker to finish or even to be ready, so that
        ranks start in parallel. Raises :class:`spawnkit.LaunchError` (or any ``OSError``)
        if no worker could be started.
        """

    def close(self) -> None:
        """The job is over; release what :meth:`start` shared between ranks."""


@runtime_checkable
class ReportsEarly(Protocol):
    """Optional for a :class:`WorkerHandle`; without it, as if it always returned ``None``."""

    def early_report(self) -> Report | None:
        """The worker's :class:`~spawnkit.plugin.Report` once it arrived whole, while the
        worker may still be ending; else ``None``. Never blocks. Core then acts on an error
        at once, not when a non-daemon thread or a library's teardown lets the worker end.
        """


@runtime_checkable
class LosesStatus(Protocol):
    """Optional for a :class:`ProcessHandle`; without it, every status it returns is known."""

    #: Why the status :meth:`ProcessHandle.poll` returned is unknown (a fork server that
    #: died took it along); ``None`` while it is known.
    status_lost: str | None


@runtime_checkable
class ProcessHandle(Protocol):
    """A local process, as a :class:`spawnkit.plugin.LocalBackend` hands it to core.

    Core's local worker adds the rest: the result channel, stopping the process group, and
    what the worker leaves behind in it.
    """

    @property
    def pid(self) -> int | None:
        """The process id; stays readable after :meth:`close`."""

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable once the process has ended."""

    def poll(self) -> int | None:
        """The exit status once the process ended, else ``None``; never blocks.

        ``0`` is success, a positive number an exit code, ``-N`` death by signal ``N``
        (the ``multiprocessing`` convention). Must reap the process if it is a child. A
        handle that may see its process end without knowing how has a ``status_lost``
        attribute (see :class:`LosesStatus`).
        """

    def close(self) -> None:
        """Release the handle's resources; called once, after the process ended."""


@runtime_checkable
class ChildWatch(Protocol):
    """The worker's half of a parent watch; pickled into the spec, armed before user code.

    Its module must import nothing beyond the standard library: it runs in every worker.
    The job's half is :class:`ParentWatch`.
    """

    name: str

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        """Start watching the job's process; call ``shutdown()`` once it is gone.

        ``fds`` are the parent half's :meth:`ParentWatch.fds`, as numbered in this process.
        If the parent is already gone, call ``shutdown()`` before returning: compare with
        ``spec.parent_pid`` or ``spec.job_pid``, never with 1.
        """


@runtime_checkable
class ParentWatch(Protocol):
    """The job's half of a parent watch, created once per job."""

    def child_watch(self) -> ChildWatch:
        """The picklable child half that every rank arms."""

    def fds(self) -> tuple[int, ...]:
        """Descriptors every rank needs; backends forward them with the spec."""

    def private_fds(self) -> tuple[int, ...]:
        """Descriptors only the job may hold; a fork child closes them before anything else."""

    def close(self) -> None:
        """The job is over: release everything."""


@runtime_checkable
class SpawnContext(Protocol):
    """A running job: N ranks treated as one. Returned by ``spawn(..., join=False)``."""

    def pids(self) -> list[int]:
        """The workers' process ids, index = rank (``-1`` where a rank has no local pid)."""

    def join(self, timeout: float | None = None, grace_period: float | None = None) -> bool:
        """Wait; ``True`` once every rank succeeded, ``False`` if ``timeout`` passed first."""

    def terminate(self, grace_period: float | None = None) -> None:
        """Stop every rank still running: SIGTERM, wait, SIGKILL."""

    def results(self) -> list[Any]:
        """Wait for the job and return every rank's return value, index = rank."""

    def __enter__(self) -> SpawnContext: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
