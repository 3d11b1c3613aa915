"""Functions that ``spawnkit run clijob:NAME`` runs in tests/test_cli.py.

The tests copy this file into the command's working directory, which the command makes
importable. Ranks that must wait for something wait on a file; a file they write is
written whole (renamed into place), so that the test never reads half of it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

# How long a rank waits for a file or idles: far longer than any test, which stops it first.
FOREVER = 120.0


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + FOREVER
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def hello(rank: int, *words: str) -> None:
    # One write of the whole line (print() may write the newline separately).
    sys.stdout.write(f"rank {rank} says {' '.join(words)}\n")
    sys.stdout.flush()


def quiet(rank: int) -> None:
    pass


def unpicklable(rank: int) -> object:
    """A value that pickle refuses: the command drops it rather than fail the rank."""
    return (lambda: rank), threading.Lock()


def streams(rank: int) -> None:
    """A line on each stream from Python and one from the descriptor itself."""
    print(f"print-out {rank}", flush=True)
    print(f"print-err {rank}", file=sys.stderr, flush=True)
    os.write(1, f"write-out {rank}\n".encode())
    os.write(2, f"write-err {rank}\n".encode())


def idle(rank: int, folder: str) -> None:
    """Say it runs (``ready<rank>``, holding the pid), then wait to be stopped."""
    _write(Path(folder) / f"ready{rank}", str(os.getpid()))
    time.sleep(FOREVER)


def fail(rank: int, folder: str, how: str) -> None:
    """Rank 1 fails as ``how`` says once rank 0 runs (``ready0``); rank 0 waits meanwhile.

    With ``how="stubborn"``, rank 0 ignores SIGTERM first, and rank 1 exits with code 3.
    """
    if rank != 1:
        if how == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        idle(rank, folder)
        return
    _wait_for(Path(folder) / "ready0")
    _write(Path(folder) / f"ready{rank}", str(os.getpid()))
    if how == "raise":
        raise RuntimeError("rank one broke")
    if how == "exit":
        sys.exit(7)
    if how == "stubborn":
        sys.exit(3)
    if how == "segv":
        import ctypes

        ctypes.string_at(0)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"unknown way to fail: {how!r}")


def go(rank: int, folder: str) -> None:
    """Print a line, then wait for the test's ``go`` file."""
    sys.stdout.write(f"rank {rank} waits for go\n")
    sys.stdout.flush()
    _wait_for(Path(folder) / "go")


def preloaded(rank: int) -> None:
    """Say whether ``clipreload`` was imported before this rank existed (by the fork server)."""
    module = sys.modules.get("clipreload")
    before = module is not None and os.getpid() != module.IMPORTED_BY
    sys.stdout.write(f"rank {rank} preloaded: {before}\n")
    sys.stdout.flush()
