"""The worker's side of the multiprocessing backends: what a new process imports to run a rank.

Kept apart from the backend (``_mp``), so that a spawn or forkserver worker imports nothing
of the job's side.
"""

from __future__ import annotations

import os
import sys

from spawnkit.plugin import run_worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spawnkit.plugin import WorkerSpec

__all__ = ["Carried", "worker"]


class Carried:
    """A rank's spec as it arrives in the new process, its descriptors and payload taken over."""

    def __init__(self, spec: WorkerSpec, fds: list[int], payload: int | None, size: int) -> None:
        spec = spec.with_fds(fds)
        if payload is not None:
            spec = spec.with_payload(_read_exactly(payload, size))
        self.spec = spec


def _read_exactly(fd: int, size: int) -> bytes:
    # Counted, not read to end-of-file: a copy of the write end elsewhere must not stall it.
    chunks = bytearray()
    try:
        while len(chunks) < size:
            chunk = os.read(fd, min(size - len(chunks), 1 << 20))
            if not chunk:
                raise EOFError(f"the job's payload ended after {len(chunks)} of {size} bytes")
            chunks += chunk
    finally:
        os.close(fd)
    return bytes(chunks)


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


def worker(arg: WorkerSpec | Carried) -> None:
    """A rank's process: the target ``multiprocessing`` runs."""
    _drop_fork_server_lifeline()
    sys.exit(run_worker(arg.spec if isinstance(arg, Carried) else arg))
