"""Process groups: signalling a worker together with the processes it started.

The one place that stops a group, for the job (a rank's group) and for a worker (its own).
Imported by every local worker: standard library only, and little of it.
"""

from __future__ import annotations

import os
import sys

__all__ = ["group_has_members", "own_group", "signal_own_group", "signal_process_group"]


def signal_process_group(pid: int, signum: int, *, reaped: bool = False) -> None:
    """Send ``signum`` to the process group that worker ``pid`` leads, or to ``pid`` alone.

    Every worker makes itself the leader of a new group first thing, so its children (the
    job's grandchildren) get the signal too. Until it has done so there is no such group, and
    then there are no grandchildren either: the worker alone is signalled. A worker that has
    ended and taken its whole group with it is not an error.

    Pass ``reaped=True`` once the worker has been reaped: then only a group that still has
    members is signalled (its id stays reserved while it has them), never the bare pid,
    which the system may have handed to an unrelated process by now. A group that refuses
    the signal then is not an error either: it may be someone else's by now.

    Raises:
        ValueError: ``pid`` is not a positive process id (0 and negative numbers would
            address this process's own group, or every process it may signal).
        PermissionError: the worker, not yet reaped, may not be signalled by this process
            (it runs as another user): the signal did not reach it.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"pid must be a worker's positive process id, not {pid!r}")
    if hasattr(os, "killpg"):
        try:
            os.killpg(pid, signum)
            return
        except (ProcessLookupError, PermissionError):
            # No such group yet, or none of its members may be signalled: the worker itself
            # tells which, unless it was reaped (then the group may be someone else's).
            pass
    if reaped:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def group_has_members(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a member that runs.

    ``killpg(pgid, 0)`` also counts zombies: a grandchild that has exited but that nobody
    reaped yet (its parent, the rank, is gone, and a subreaper may take its time). Where
    ``/proc`` tells, those do not count: there is nothing left to stop in them.
    """
    if not hasattr(os, "killpg") or pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a group of someone else's: not what we are waiting for
        return False
    return _running_member(pgid)


def _running_member(pgid: int) -> bool:
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc (macOS, BSD): trust killpg
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):  # gone while we looked
            continue
        # After the command: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def own_group() -> int | None:
    """This process's group id if it leads one, else ``None``.

    Only a group a worker leads is its own to signal: any other would be the job's, or the
    shell's that started the job.
    """
    if sys.platform == "win32":  # no process groups: a worker is signalled alone
        return None
    else:  # a platform branch type checkers understand
        pid = os.getpid()
        try:
            return pid if os.getpgid(0) == pid else None
        except OSError:
            return None


def signal_own_group(signum: int) -> None:
    """Send ``signum`` to the group this process leads, or to this process alone."""
    group = own_group()
    try:
        if sys.platform == "win32" or group is None:
            os.kill(os.getpid(), signum)
        else:
            os.killpg(group, signum)
    except OSError:
        pass
