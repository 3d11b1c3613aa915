"""Rank functions and a job program for tests/test_fork_server_state.py.

:func:`program` runs one ``forkserver`` job after each change of the process state it is
given, all on one server, and prints what each job's rank saw: the test starts it as a
program of its own, so that what it changes (nice, affinity) never touches the test run.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Callable
from typing import Any

import spawnkit


def _made_file_mode(folder: str) -> str:
    path = os.path.join(folder, f"made-by-{os.getpid()}")
    with open(path, "w"):
        pass
    return oct(stat.S_IMODE(os.stat(path).st_mode))


def _survives_sigusr1(folder: str) -> str:
    os.kill(os.getpid(), signal.SIGUSR1)  # ends the rank unless SIGUSR1 is ignored
    return "survived"


def _sigint(folder: str) -> str:
    handler = signal.getsignal(signal.SIGINT)
    if isinstance(handler, signal.Handlers):
        return handler.name
    return str(getattr(handler, "__name__", handler))


def _nofile(folder: str) -> list[int]:
    import resource

    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


SEEN: dict[str, Callable[[str], Any]] = {
    "umask": _made_file_mode,
    "sigusr1": _survives_sigusr1,
    "sigint": _sigint,
    "nofile": _nofile,
    "nice": lambda folder: os.getpriority(os.PRIO_PROCESS, 0),
    "affinity": lambda folder: sorted(os.sched_getaffinity(0)),
    "sched": lambda folder: os.sched_getscheduler(0),
}


def _change(change: str) -> None:
    import resource

    if change == "umask 022":
        os.umask(0o022)
    elif change == "umask 077":
        os.umask(0o077)
    elif change == "ignore SIGUSR1":
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    elif change == "default SIGUSR1":
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    elif change == "ignore SIGINT":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif change == "handle SIGINT":
        signal.signal(signal.SIGINT, signal.default_int_handler)
    elif change == "lower NOFILE":
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 1000))
    elif change == "nice +5":
        os.nice(5)
    elif change == "first CPU only":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    elif change == "SCHED_BATCH":
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    elif change != "nothing":
        raise ValueError(f"unknown change {change!r}")


def look(rank: int, item: str, folder: str) -> tuple[int, Any]:
    """The rank's parent (its server), and what it sees of ``item``."""
    return os.getppid(), SEEN[item](folder)


def program(item: str, folder: str, *changes: str) -> None:
    """After each of ``changes``, a job: print, as JSON, each job's server and outcome."""
    runs = []
    for change in changes:
        _change(change)
        try:
            ((server, seen),) = spawnkit.spawn(
                look, args=(item, folder), nprocs=1, backend="forkserver"
            )
        except spawnkit.ProcessExitedException as exc:
            server, seen = None, f"died of {exc.signal_name}"
        runs.append([server, seen])
    print(json.dumps(runs))


def wait_for_interrupt(rank: int, folder: str) -> None:
    """Say it is waiting, wait (bounded) for a KeyboardInterrupt; say its finally ran."""
    try:
        with open(os.path.join(folder, f"waiting-{rank}"), "w"):
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise TimeoutError("no SIGINT came within 60 s")
    finally:
        with open(os.path.join(folder, f"finally-{rank}"), "w"):
            pass


def parent(rank: int) -> int:
    return os.getppid()
