"""The rank side of breakdown.py: a no-op ``fn`` that writes down when its rank began.

Every time is ``time.monotonic()`` (CLOCK_MONOTONIC), one clock for every process on Linux,
so a rank's times and its parent's subtract. With them go the rank's own resource use up to
``fn``, from ``getrusage()``, which Linux zeroes in a fork child: CPU time, minor page faults
(a fork's copy-on-write) and voluntary context switches (waits: for a thread to run, a lock,
a pipe). Stdlib only: ranks import this module.
"""

from __future__ import annotations

import os
import resource  # here, not in fn: its import is no part of any stage
import sys
import time

# The parent's monotonic time just before it called fork_exec for an exec'd rank (set there
# by breakdown.py); a forked rank has the fork's own time instead.
CREATED_ENV = "SPAWNKIT_BENCH_CREATED"
# Doubles a rank writes: created, born, fn entered, fn returned; then, as of fn's start, its
# CPU seconds, minor page faults and voluntary context switches.
RECORD = 7
NAN = float("nan")

_fork_called = NAN  # in the forking process: when its latest os.fork() began
_fork_returned: float | None = None  # in a forked child: when its os.fork() returned there


def _before_fork() -> None:
    global _fork_called
    _fork_called = time.monotonic()


def _after_fork_in_child() -> None:
    global _fork_returned
    _fork_returned = time.monotonic()


# Imported by the parent (fork family) or preloaded by a fork server, so that the hooks run
# in whichever process forks the ranks. ``before`` hooks run last-registered first and
# ``after_in_child`` first-registered first, so the fork's span includes the other hooks
# (multiprocessing's, spawnkit's): all of it is process creation.
os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def stamp(rank: int, path: str) -> None:
    """The job's ``fn``: does nothing between its two readings of the clock."""
    entered = time.monotonic()
    returned = time.monotonic()
    used = resource.getrusage(resource.RUSAGE_SELF)  # after the clock: fn's span stays bare
    cpu = used.ru_utime + used.ru_stime
    if _fork_returned is not None:  # this rank is a fork
        created, born = _fork_called, _fork_returned
    else:  # exec'd: the parent's time before fork_exec, the interpreter's at its sitecustomize
        created = float(os.environ.get(CREATED_ENV, NAN))
        born = getattr(sys.modules.get("sitecustomize"), "STARTED", NAN)
    import struct

    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(
            fd,
            struct.pack(
                f"{RECORD}d", created, born, entered, returned, cpu, used.ru_minflt, used.ru_nvcsw
            ),
            rank * 8 * RECORD,
        )
    finally:
        os.close(fd)
