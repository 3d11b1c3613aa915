"""Built-in parent watches, one mechanism a module; each child half imports only the stdlib."""

from __future__ import annotations

import os

from .._signals.threads import start_thread

__all__ = ["fd_identity", "start_thread"]


def fd_identity(fd: int) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``fd`` names now, ``None`` if it is closed.

    A watch compares it with what it armed on before it trusts an event: user code may
    close the watch's descriptor and open a file that gets the same number.
    """
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
