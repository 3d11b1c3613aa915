"""Ranks share the job's ``multiprocessing`` resource tracker, as the stdlib's children do.

A process that creates or attaches to a ``SharedMemory`` segment (or a named semaphore)
registers it with its resource tracker, which unlinks what is still registered once the
processes it serves are gone. A rank with a tracker of its own would thus unlink the
parent's segment as the rank ends. So, as ``multiprocessing``'s spawn and forkserver start
methods do, a job whose ranks unpickle their work hands them the parent's tracker (started
if need be), and each rank's ``multiprocessing`` uses it. A fork rank has it already.

The rank imports nothing for it: the descriptor goes to ``multiprocessing`` when the program
first imports the tracker's module, if it ever does.
"""

from __future__ import annotations

import os
import sys

from ._worker import CarriedFd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PLACE", "carry", "parent_fd"]

_MODULE = "multiprocessing.resource_tracker"

#: Where the tracker's descriptor is among the ones a job carries.
PLACE = 0


def parent_fd() -> int | None:
    """The write end of this process's resource tracker, started if it never had one.

    ``None`` when the program closed that descriptor or put something else under its number:
    its ranks then keep trackers of their own. The number is only looked at, never written
    to or closed (``multiprocessing`` would probe it, writing into whatever it now is).
    """
    import fcntl
    import stat
    from multiprocessing import resource_tracker

    tracker: Any = resource_tracker._resource_tracker
    if tracker._fd is None:
        tracker.ensure_running()
    fd: int = tracker._fd
    try:
        pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
        writes = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    except OSError:
        return None
    return fd if pipe and writes else None


class _Carried:
    # First in the pickle: the rank uses the tracker before it unpickles anything of the
    # job (a SharedMemory among the arguments registers itself as it is unpickled).
    def __init__(self, job: object) -> None:
        self.job = job

    def __reduce__(self) -> tuple[Any, ...]:
        return _after, (_Link(), self.job)


class _Link:
    def __reduce__(self) -> tuple[Any, ...]:
        return _use, (CarriedFd(PLACE), sys.version_info[:2])


def carry(job: object) -> object:
    """``job``, to pickle with the tracker's descriptor carried at :data:`PLACE`."""
    return _Carried(job)


def _after(link: None, job: object) -> object:
    return job


def _use(carried: CarriedFd, version: tuple[int, int]) -> None:
    fd = carried.detach()
    if version != sys.version_info[:2]:  # a rank run by another Python may speak otherwise
        os.close(fd)
        return
    module = sys.modules.get(_MODULE)
    if module is not None:
        module._resource_tracker._fd = fd
    else:
        sys.meta_path.insert(0, _OnImport(fd))


class _OnImport:
    """Finds the tracker's module as usual and, once it is loaded, points it at ``fd``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.loader: Any = None

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec: Any = importlib.util.find_spec(name)
        if spec is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        module._resource_tracker._fd = self.fd
