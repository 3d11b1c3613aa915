"""Descriptors spawnkit hands to workers: never 0, 1 or 2.

A program started with a standard stream closed (``python job.py <&-``) gets those numbers
back from the next ``pipe()``; a backend that gives its worker a fresh stdin would then
replace the channel with ``/dev/null``, and code that writes to "stdout" would write into it.
"""

from __future__ import annotations

import os
import sys

__all__ = ["above_stdio", "identity", "out_of_the_way", "pipe", "readable"]


def above_stdio(fd: int) -> int:
    """``fd`` itself, or a non-inheritable duplicate numbered 3 or more (``fd`` closed)."""
    if sys.platform != "win32" and fd <= 2:  # platform test first: mypy skips this on Windows
        import fcntl

        try:
            return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        finally:
            os.close(fd)
    return fd


def pipe() -> tuple[int, int]:
    """``os.pipe()`` whose ends are never standard-stream numbers."""
    read_end, write_end = os.pipe()
    if read_end > 2 and write_end > 2:
        return read_end, write_end
    try:
        read_end = above_stdio(read_end)
    except BaseException:
        os.close(write_end)
        raise
    try:
        return read_end, above_stdio(write_end)
    except BaseException:
        os.close(read_end)
        raise


# `os.closerange(0, 1024)` (or 3, 1024) is how programs close "every" descriptor.
_OUT_OF_REACH = 1024


def out_of_the_way(fd: int) -> int:
    """``fd``, moved to 1024 or above when the descriptor limit allows (``fd`` closed).

    For a descriptor that something writes to without looking (the interpreter's signal
    wakeup descriptor): user code that closes descriptors below 1024 and opens files
    under the freed numbers cannot make that write land in one of its files.
    """
    if sys.platform == "win32":
        return fd
    else:
        import fcntl
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft <= _OUT_OF_REACH + 64:
            # A soft limit of 1024 is common; the hard one is usually far higher, and
            # raising the soft one needs no privilege (Go's runtime does it for every
            # program). Only a hard limit this low leaves the descriptor within reach.
            wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
            if wanted <= _OUT_OF_REACH + 64:
                return above_stdio(fd)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                return above_stdio(fd)
        try:
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _OUT_OF_REACH)
        except OSError:
            return above_stdio(fd)
        os.close(fd)
        return moved


def identity(fd: int) -> tuple[int, int, int] | None:
    """``(fd, device, inode)`` of what ``fd`` names now; ``None`` once it is closed.

    Compared before a descriptor is trusted again: user code may close it and open a file
    of its own that gets the same number.
    """
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (fd, st.st_dev, st.st_ino)


def readable(fd: int) -> bool:
    """Whether a read from ``fd`` would not block now (POSIX: ``poll()`` with no wait)."""
    if sys.platform == "win32":
        raise OSError("select.poll() is not available on Windows")
    else:  # noqa: RET506 - a platform branch type checkers understand
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
