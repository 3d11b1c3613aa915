"""What the three ``multiprocessing`` start methods share: a process, a handle, fd passing."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import spawnkit

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess

__all__ = ["MultiprocessingBackend", "MultiprocessingHandle"]


class _Carrier:
    """Carries a spec into a new interpreter, its descriptors duplicated on the way.

    ``multiprocessing`` pickles a process's arguments while it spawns; ``DupFd`` then
    registers each descriptor with the spawning Popen, which passes it to the child (as an
    inherited fd for ``spawn``, over SCM_RIGHTS for ``forkserver``).
    """

    def __init__(self, spec: spawnkit.WorkerSpec) -> None:
        self.spec = spec

    def __reduce__(self) -> Any:
        from multiprocessing.reduction import DupFd

        return (_Carried, (self.spec, [DupFd(fd) for fd in self.spec.fds]))


class _Carried:
    def __init__(self, spec: spawnkit.WorkerSpec, fds: list[Any]) -> None:
        self.spec = spec.with_fds([fd.detach() for fd in fds])


def _drop_fork_server_lifeline() -> None:
    # multiprocessing gives every forkserver worker (and a fork child inherits) a copy of
    # the write end of the pipe whose end-of-file tells the job's fork server that the job
    # is gone. Kept open here, it keeps the server - the direct parent of forkserver
    # workers - alive after the job died, and a watch that follows the direct parent
    # (prctl, poll) would never fire. A worker never needs the job's server: forgetting it
    # also lets a job started inside the worker launch a server of its own.
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is None or not isinstance(fd, int):
        return
    try:
        os.close(fd)
    except OSError:
        pass
    for attr in ("_forkserver_alive_fd", "_forkserver_address", "_forkserver_pid"):
        if hasattr(server, attr):
            setattr(server, attr, None)


def _worker(arg: spawnkit.WorkerSpec | _Carried) -> None:
    _drop_fork_server_lifeline()
    sys.exit(spawnkit.run_worker(arg.spec if isinstance(arg, _Carried) else arg))


class MultiprocessingHandle:
    """A worker started by ``multiprocessing``."""

    def __init__(self, process: BaseProcess, own_child: bool) -> None:
        self._process = process
        self._pid = process.pid  # still answered after close(), as the protocol asks
        self._pidfd: int | None = None
        # multiprocessing's sentinel for fork and spawn is a pipe the worker holds open, and
        # so do grandchildren it forks; a pidfd turns readable when the worker itself ends.
        if own_child and hasattr(os, "pidfd_open") and process.pid is not None:
            try:
                self._pidfd = os.pidfd_open(process.pid)
            except OSError:
                self._pidfd = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def sentinel(self) -> int:
        return self._process.sentinel if self._pidfd is None else self._pidfd

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._pid is not None:
            spawnkit.signal_process_group(self._pid, signum)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._process.close()


class MultiprocessingBackend:
    """Starts each rank as a ``multiprocessing`` process of the given start method."""

    def __init__(self, method: str) -> None:
        import multiprocessing

        self._method = method
        self._context: BaseContext = multiprocessing.get_context(method)
        # Loaded here, a fork child inherits the worker bootstrap instead of importing it
        # again in every rank.
        self._run_worker = spawnkit.run_worker

    def start(self, spec: spawnkit.WorkerSpec) -> MultiprocessingHandle:
        arg: spawnkit.WorkerSpec | _Carrier = spec  # fork: inherited, fds keep their numbers
        if self._method == "forkserver":
            spec = spec.with_parent_pid(_forkserver_pid())
        if self._method != "fork":
            arg = _Carrier(spec)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=_worker, args=(arg,), name=f"spawnkit-rank-{spec.rank}", daemon=False
        )
        process.start()
        return MultiprocessingHandle(process, own_child=self._method != "forkserver")

    def close(self) -> None:
        pass


def _forkserver_pid() -> int:
    from multiprocessing import forkserver

    forkserver.ensure_running()
    # The stdlib keeps the server's pid private; the watch needs it to tell the server (the
    # worker's direct parent) apart from the job.
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not isinstance(pid, int):
        # Guessing would be worse than failing: a wrong parent pid makes every worker think
        # its job is gone the moment it arms its watch.
        raise spawnkit.LaunchError(
            "cannot find the fork server's pid (multiprocessing's internals changed); "
            "use backend 'spawn' or 'subprocess'"
        )
    return pid
