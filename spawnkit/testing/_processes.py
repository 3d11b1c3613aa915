"""Finding the processes a test left behind: every descendant, however deep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "descendants",
    "infrastructure_pids",
    "kill_all",
    "leak_guard",
    "wait_for_files",
    "wait_gone",
]


def _process_table() -> dict[int, tuple[int, str]]:
    """``pid -> (ppid, state)`` for every process visible here."""
    table: dict[int, tuple[int, str]] = {}
    if os.path.isdir("/proc/self/task"):  # Linux; elsewhere ask ps
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read().decode(errors="replace")
            except OSError:  # gone while we looked
                continue
            fields = stat.rsplit(")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), fields[0])
        return table
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat="],  # from PATH, as a user's shell would find it
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        pid, ppid, state = line.split(None, 2)
        table[int(pid)] = (int(ppid), state[:1])
    return table


def infrastructure_pids() -> set[int]:
    """Long-lived helpers ``multiprocessing`` keeps per parent: not leaks, but their
    children (forkserver workers) are."""
    found: set[int] = set()
    try:
        from multiprocessing import forkserver, resource_tracker

        for obj, attr in (
            (forkserver._forkserver, "_forkserver_pid"),
            (resource_tracker._resource_tracker, "_pid"),
        ):
            pid = getattr(obj, attr, None)
            if isinstance(pid, int):
                found.add(pid)
    except ImportError:
        pass
    return found


def descendants(root: int | None = None, exclude: Iterable[int] = ()) -> dict[int, str]:
    """Every process below ``root`` (default: this one), ``pid -> state``.

    Processes in ``exclude`` are left out, but their own children are still listed.
    """
    root = os.getpid() if root is None else root
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    skip = set(exclude)
    found: dict[int, str] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in skip:
            found[pid] = table[pid][1]
        stack.extend(children.get(pid, []))
    return found


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` for ``pids`` to disappear (zombies count as present)."""
    remaining = set(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        table = _process_table()
        remaining = {pid for pid in remaining if pid in table}
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return remaining


def wait_for_files(*paths: Path, timeout: float = 30.0) -> None:
    """Wait until every path exists: how a worker says it got somewhere. Fails after
    ``timeout`` seconds naming the ones that never appeared."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            missing = [str(p) for p in paths if not p.exists()]
            raise AssertionError(f"never appeared: {', '.join(missing)}")
        time.sleep(0.005)


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL ``pids`` and reap the ones that are this process's children."""
    if sys.platform == "win32":  # no SIGKILL; os.kill() terminates outright anyway
        kill = signal.SIGTERM
    else:
        kill = signal.SIGKILL
    for pid in pids:
        try:
            os.kill(pid, kill)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except (ChildProcessError, OSError):
            pass


@contextmanager
def leak_guard(timeout: float = 10.0) -> Iterator[None]:
    """Raise ``AssertionError`` if the block leaves a descendant behind (zombies included).

    Whatever is left is killed first, so one leaking test does not poison the next.
    """
    before = set(descendants(exclude=infrastructure_pids()))
    yield
    leaked = set(descendants(exclude=infrastructure_pids())) - before
    leaked = wait_gone(leaked, timeout)
    if leaked:
        states = descendants()
        detail = ", ".join(f"{pid} ({states.get(pid, '?')})" for pid in sorted(leaked))
        kill_all(leaked)
        raise AssertionError(f"left processes behind: {detail}")
