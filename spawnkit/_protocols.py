"""The contracts between core, backends and parent watches, as structural protocols.

A plugin type-checks against these without importing a base class: it only has to have the
right methods. Core owns every semantic (join, terminate, errors, results); a backend only
turns a :class:`~spawnkit.WorkerSpec` into a running worker and a :class:`WorkerHandle`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

    from ._spec import WorkerSpec

__all__ = ["Backend", "ChildWatch", "ParentWatch", "SpawnContext", "WorkerHandle"]


@runtime_checkable
class WorkerHandle(Protocol):
    """What core needs of one started worker, wherever it runs.

    Core never waits on a pid itself: it waits until :attr:`sentinel` is readable, then asks
    :meth:`poll`. A local process can use a pidfd or ``multiprocessing``'s sentinel; a remote
    worker can hand out one end of a pipe that a relay thread closes when the worker ends.
    """

    @property
    def pid(self) -> int | None:
        """The worker's process id on this machine, or ``None`` if it has none here.

        Stays readable after :meth:`close`.
        """

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable once the worker has ended."""

    def poll(self) -> int | None:
        """The exit status once the worker ended, else ``None``; never blocks.

        ``0`` is success, a positive number an exit code, ``-N`` death by signal ``N``
        (the ``multiprocessing`` convention). Must reap the process if it is a child.
        """

    def send_signal(self, signum: int) -> None:
        """Deliver ``signum`` to the worker's process group; never raises.

        Also after the worker ended: children it left may still be in its group. May arrive
        before the worker made itself a group leader; then signal the worker alone.
        """

    def close(self) -> None:
        """Release the handle's resources; called once, after the worker ended."""


@runtime_checkable
class Backend(Protocol):
    """Starts workers. Created once per job with the job's backend options."""

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Start one worker that calls :func:`spawnkit.run_worker` with ``spec``.

        Must return without waiting for the worker to finish or even to be ready, so that
        ranks start in parallel. Must forward every descriptor in ``spec.fds``. Raises
        :class:`spawnkit.LaunchError` (or any ``OSError``) if no worker could be started.
        """

    def close(self) -> None:
        """The job is over; release what :meth:`start` shared between ranks."""


@runtime_checkable
class ChildWatch(Protocol):
    """The worker's half of a parent watch; pickled into the spec, armed before user code.

    Its module must import nothing beyond the standard library: it runs in every worker.
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
