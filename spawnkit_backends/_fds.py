"""Descriptor checks the built-in local backends share: the standard library's, named."""

from __future__ import annotations

import os
import sys

__all__ = ["identity", "readable"]


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
