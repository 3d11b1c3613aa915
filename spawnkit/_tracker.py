"""Ranks share the job's ``multiprocessing`` resource tracker, as the stdlib's children do.

A process that creates or attaches to a ``SharedMemory`` segment (or a named semaphore)
registers it with its resource tracker, which unlinks what is still registered once the
processes it serves are gone. A rank with a tracker of its own would thus unlink the
parent's segment as the rank ends. So, as ``multiprocessing``'s spawn and forkserver start
methods do, a job whose ranks unpickle their work hands them the parent's tracker (started
if need be), and each rank's ``multiprocessing`` uses it. A fork rank inherits the parent's,
if the parent has one, as ``multiprocessing``'s fork children do.

The rank imports nothing for it: the descriptor goes to ``multiprocessing`` when the program
first imports the tracker's module, if it ever does.
"""

from __future__ import annotations

import contextlib
import os
import sys

from ._worker import CarriedFd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PLACE", "carry", "shared_tracker"]

_MODULE = "multiprocessing.resource_tracker"

#: Where the tracker's descriptor is among the ones a job carries.
PLACE = 0


def shared_tracker() -> int | None:
    """The write end of this process's resource tracker, started if it never had one or
    restarted if it died.

    ``None`` when the program closed that descriptor or put something else under its number:
    its ranks then keep trackers of their own. ``multiprocessing`` would probe such a number,
    writing into whatever it now is, and close it: here it is only looked at.
    """
    try:
        from multiprocessing import resource_tracker

        tracker: Any = resource_tracker._resource_tracker
        fd: int | None = tracker._fd
        state = "none" if fd is None else _state(fd, tracker._pid)
        if state in ("none", "dead"):  # a dead one's probe goes to its pipe, read by nobody
            tracker.ensure_running()
            fd, state = tracker._fd, "alive"
    except OSError as exc:  # out of descriptors, most likely
        from ._errors import LaunchError
        from ._launch import out_of_files

        raise LaunchError(
            "could not start multiprocessing's resource tracker, which the ranks share: "
            f"{type(exc).__name__}: {exc}{out_of_files(exc)}"
        ) from exc
    return fd if state == "alive" else None


def _state(fd: int, pid: int | None) -> str:
    """``"alive"``, ``"dead"`` (a tracker's pipe without its reader) or ``"foreign"``."""
    if sys.platform == "win32":  # never called there: no tracker is shared
        return "foreign"
    else:  # a platform branch type checkers understand
        import fcntl
        import select
        import stat

        try:
            info = os.fstat(fd)
            mode = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            return "foreign"
        if not stat.S_ISFIFO(info.st_mode) or mode & os.O_ACCMODE != os.O_WRONLY:
            return "foreign"
        poll = select.poll()
        poll.register(fd, 0)  # only POLLERR, a write end without readers, can come
        if poll.poll(0):
            return "dead"
        # The program's own pipe may have taken the number: the tracker reads this very pipe.
        # (Where /proc cannot tell, and in a rank, whose tracker is not its child: trusted.)
        return "alive" if pid is None or _reads(pid, info.st_ino) else "foreign"


def _reads(pid: int, pipe: int) -> bool:
    """Whether process ``pid`` holds pipe ``pipe`` (an inode), as far as /proc can tell."""
    try:
        held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
    except PermissionError:  # another user's, or /proc hides it: cannot tell
        return True
    except OSError:  # no such process (or no /proc): someone else reads the pipe
        return not os.path.isdir("/proc/self/fd")
    return f"pipe:[{pipe}]" in held


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
        _point(module, fd)
    else:
        sys.meta_path.insert(0, _OnImport(fd))


class _OnImport:
    """Finds the tracker's module as the other finders do; once the module has run, points
    it at ``fd``. A mere lookup (``importlib.util.find_spec``) leaves it in place."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if name != _MODULE:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = None if finder is self or find is None else find(name, path, target)
            if spec is not None:
                spec.loader = _Loader(spec.loader, self)
                return spec
        return None


class _Loader:
    """The module's own loader, that sets the descriptor after running the module."""

    def __init__(self, loader: Any, finder: _OnImport) -> None:
        self.loader, self.finder = loader, finder

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package...
        loader = vars(self).get("loader")  # absent in a copy being rebuilt
        if loader is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(loader, name)

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if sys.modules.get(_MODULE) is module:  # the import, not a private copy
            _point(module, self.finder.fd)
            with contextlib.suppress(ValueError):  # another thread's import was first
                sys.meta_path.remove(self.finder)


def _point(module: Any, fd: int) -> None:
    # As in a child of multiprocessing's spawn: the tracker is the job's, not this
    # process's child (a fork server's module may name one of the server's own).
    module._resource_tracker._fd = fd
    module._resource_tracker._pid = None
