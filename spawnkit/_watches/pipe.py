"""``pipe``: a lifeline pipe; the job holds the only write end, so EOF means it is gone.

Portable to every POSIX system and to every backend, since a descriptor can always be
forwarded. Its weak spot is a stray copy of the write end: core records it as parent-only,
so a fork child closes it before anything else.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec


class PipeParent:
    """The job's side: one pipe per job, the read end forwarded to every rank."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()

    def child_watch(self) -> PipeChild:
        return PipeChild()

    def fds(self) -> tuple[int, ...]:
        return (self._read,)

    def private_fds(self) -> tuple[int, ...]:
        return (self._write,)

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


class PipeChild:
    """The worker's side: a daemon thread blocked in read() until end-of-file."""

    name = "pipe"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        import threading

        (fd,) = fds

        def wait() -> None:
            while True:
                try:
                    if not os.read(fd, 1):
                        break
                except InterruptedError:
                    continue
                except OSError:
                    break
            shutdown()

        threading.Thread(target=wait, name="spawnkit-watch-pipe", daemon=True).start()
