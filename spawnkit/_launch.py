"""Launching a job's ranks through its backend, and holding the backend to its contract."""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ._errors import LaunchError, PluginError, SpawnError, SpawnTimeoutError
from ._outcome import Rank

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._output import OutputPlan
    from ._protocols import Backend
    from ._spec import WorkerSpec

    # What one rank runs: the pickled job, or (fn, args) unpickled, and the descriptors
    # its arguments carry.
    RankJob = tuple[
        bytes | None,
        tuple[Callable[..., Any], tuple[Any, ...]] | None,
        tuple[int, ...],
    ]

__all__ = ["failed_launch", "start_ranks"]

_HANDLE = "a WorkerHandle: a pid, wait_fds(), poll(), stop(force) and close()"


def start_ranks(
    into: list[Rank],
    name: str,
    backend: Backend,
    spec: WorkerSpec,
    jobs: Sequence[RankJob],
    envs: Sequence[Mapping[str, str]] | None,
    watch_fds: tuple[int, ...],
    output: OutputPlan | None,
    notify: Callable[[], None],
) -> None:
    """Start one rank per entry of ``jobs`` and append each to ``into``, in rank order."""
    local = spec.job_pid is not None
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
                fds=(*watch_fds, *stream_fds, *carried) if local else (),
                carried=len(carried) if local else 0,
                streams=streams,
                env=envs[rank] if envs is not None else {},
            )
            handle = backend.start(rank_spec, notify)
        finally:
            for fd in stream_fds:  # the worker has its copies
                os.close(fd)
        _check_handle(name, handle)
        # ReportsEarly by its attribute: isinstance() of a runtime-checkable protocol walks
        # the protocol's members every time (17 us a rank, in the parent's start-up).
        early = getattr(handle, "early_report", None)
        if not callable(early):
            early = None
        into.append(Rank(rank, handle, output.logs(rank) if output is not None else {}, early))


def _check_handle(name: str, handle: object) -> None:
    # Here, not deep in join(): a backend's author learns which method broke the contract.
    methods = ("wait_fds", "poll", "stop", "close")
    missing = [f"{m}()" for m in methods if not callable(getattr(handle, m, None))]
    try:
        pid = getattr(handle, "pid")  # noqa: B009 - a property may raise anything
    except Exception:  # noqa: BLE001 - the contract is broken: said below
        pid = False
    if not (pid is None or (isinstance(pid, int) and not isinstance(pid, bool))):
        missing.insert(0, "pid (an int or None)")
    if missing:
        stop = getattr(handle, "stop", None)
        if callable(stop):  # what it started must not outlive the error
            try:
                stop(force=True)
            except Exception:  # noqa: BLE001, S110 - the contract error below says enough
                pass
        raise PluginError(
            f"backend {name!r}: start() returned {type(handle).__qualname__} {handle!r:.100}, "
            f"which lacks {', '.join(missing)}; start() must return {_HANDLE} "
            "(see spawnkit.plugin.WorkerHandle)"
        )


def failed_launch(
    exc: BaseException,
    name: str,
    started: int,
    nprocs: int,
    deadline: float,
    timeout: float | None,
) -> SpawnError | None:
    """What a failed start of rank ``started`` is to the user; ``None``: ``exc`` as it is.

    Only a start that failed is a LaunchError. Anything else (the program's own exception
    from a signal handler, KeyboardInterrupt, a broken contract) comes out as it is.
    """
    if isinstance(exc, (OSError, LaunchError)) and time.monotonic() >= deadline:
        # The backend bounded its start by spec.deadline: that the start failed is the
        # job's timeout, as it is for a backend that did not block and ran out of time.
        assert timeout is not None  # a deadline was set
        return SpawnTimeoutError(
            f"the job's deadline of {timeout:g} s passed while rank {started} of {nprocs} was "
            f"starting ({type(exc).__name__}: {exc}); the ranks started were stopped. Raise "
            "timeout= if the job needs longer",
            timeout,
            tuple(range(started + 1)),
        )
    if not isinstance(exc, OSError):
        return None
    return LaunchError(
        f"backend {name!r} could not start rank {started} of {nprocs}: "
        f"{type(exc).__name__}: {exc}{out_of_files(exc)}"
    )


def out_of_files(exc: OSError) -> str:
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
