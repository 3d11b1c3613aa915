"""Worker functions for tests/test_launcher.py: importable by name, so every backend can run them.

A worker says it got somewhere by creating a file; the test waits on that file, never on a
sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def speak(rank: int) -> int:
    """One line per way of writing: Python's print, a raw os.write, and a child process."""
    print(f"py-out {rank}")
    print(f"py-err {rank}", file=sys.stderr)
    os.write(1, f"fd-out {rank}\n".encode())
    os.write(2, f"fd-err {rank}\n".encode())
    # A child process inherits descriptors 1 and 2 as they are: its output goes there too.
    subprocess.run(["sh", "-c", f"echo sh-out {rank}; echo sh-err {rank} >&2"], check=True)
    return rank


def line_of(rank: int, i: int) -> bytes:
    """Line ``i`` of rank ``rank`` (without its newline): long enough to need several reads."""
    return f"rank={rank} line={i:03d} ".encode() + bytes([ord("a") + rank]) * (i % 97)


def many_lines(rank: int, count: int) -> None:
    """``count`` lines on fd 1, each written in three pieces, as unbuffered C code might."""
    for i in range(count):
        line = line_of(rank, i)
        half = len(line) // 2
        for piece in (line[:half], line[half:], b"\n"):
            os.write(1, piece)


def long_line(rank: int, size: int) -> None:
    """One line of ``size`` bytes, longer than the relay's 64 KiB pipe reads."""
    os.write(1, b"x" * size + b"\n")


def unterminated(rank: int) -> None:
    """A line, then a last one without its newline, on stdout and stderr."""
    os.write(1, f"first out {rank}\nlast out {rank}".encode())
    os.write(2, f"first err {rank}\nlast err {rank}".encode())


def say_then_wait(rank: int, directory: str) -> None:
    """Print a line, then wait for the test to create ``go`` (having seen the line)."""
    print(f"hello from {rank}")
    _wait_for(Path(directory) / "go")


def rank_variables(rank: int) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in (*RANK_VARIABLES, "SPAWNKIT_TEST_VALUE")}


def echo_args(rank: int, *args: Any) -> tuple[int, tuple[Any, ...]]:
    return rank, args


def block(rank: int) -> None:
    """Run until stopped."""
    while True:
        signal.pause()


def return_or_block(rank: int) -> int:
    """Rank 0 finishes at once; every other rank runs until stopped."""
    if rank == 0:
        return rank
    block(rank)
    return rank


def raise_bad_input(rank: int) -> None:
    raise ValueError("bad input")


def raise_or_block(rank: int) -> None:
    """Rank 0 raises at once; every other rank runs until stopped."""
    if rank == 0:
        raise ValueError("bad input")
    block(rank)


def exit_or_block(rank: int, code: int) -> None:
    """Rank 0 exits with ``code``; every other rank runs until stopped."""
    if rank == 0:
        sys.stdout.flush()
        os._exit(code)
    block(rank)


def signal_or_block(rank: int, signum: int) -> None:
    """Rank 0 sends itself ``signum`` (SIGSEGV: faulthandler's trace first); others block."""
    if rank == 0:
        os.kill(os.getpid(), signum)
        block(rank)  # until the signal, which is delivered before os.kill returns
    block(rank)


def fail_in_turn(rank: int, directory: str) -> None:
    """Rank 1 raises at once; rank 0 raises only once rank 1's process has ended.

    Rank 1 raised before its process ended, so rank 0's failure is strictly later on the
    machine's clock, whatever the load: the job's root cause must be rank 1's.
    """
    here = Path(directory)
    if rank == 1:
        _atomic_write(here / "1.pid", str(os.getpid()))
        raise RuntimeError("rank 1 failed first")
    pid = int(_wait_for(here / "1.pid").read_text())
    while _alive(pid):
        time.sleep(0.005)
    raise RuntimeError("rank 0 failed second")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (ended, not yet reaped by the job) has ended."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _wait_for(path: Path, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)
    return path
