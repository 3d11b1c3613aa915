"""Worker functions for tests/test_output_hardening.py: importable by name, for every backend.

A worker says it got somewhere by creating a file; the test waits on that file, never on a
sleep.
"""

from __future__ import annotations

import fcntl
import os
import sys
import termios
import time
from pathlib import Path

# The relay reads a rank's pipe this much at a time (spawnkit._output).
READ_SIZE = 1 << 16
# A bound for waiting on the relay, far above what it needs on a loaded machine.
RELAY_WAIT = 30.0


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this __str__ is broken")


class StrNotAString(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]  # noqa: PLE0307 - the case under test


class ReprRaises:
    """A result that cannot travel home, and cannot be shown either."""

    def __repr__(self) -> str:
        raise RuntimeError("this __repr__ is broken")

    def __reduce__(self) -> str:
        raise StrRaises


class ExitCodeStrRaises:
    def __str__(self) -> str:
        raise RuntimeError("this exit code cannot be printed")


def raise_unprintable(rank: int, kind: str) -> None:
    raise {"raises": StrRaises, "not a string": StrNotAString}[kind]("bad input")


def return_unprintable(rank: int) -> ReprRaises:
    return ReprRaises()


def exit_unprintable(rank: int) -> None:
    raise SystemExit(ExitCodeStrRaises())


def hello(rank: int) -> None:
    print(f"hello {rank}", flush=True)


def out_line(i: int) -> bytes:
    """Line ``i`` (with its newline) of what :func:`fill_then_wait` writes."""
    return f"line {i:06d} ".encode() + b"x" * 1000 + b"\n"


def fill_then_fail(rank: int, lines: int, done: str) -> None:
    """Write ``lines`` lines to stdout, create ``done``, then fail: the job ends at once."""
    data = b"".join(out_line(i) for i in range(lines))
    _write_all(1, data)
    Path(done).touch()
    raise RuntimeError("filled")


def crlf_across_reads(rank: int) -> None:
    """Write a ``\\r\\n``: its ``\\r`` ends one read of the relay, its ``\\n`` starts the next."""
    head = b"one\r\n" * 1000
    first = head + b"y" * (READ_SIZE - len(head) - 1) + b"\r"
    assert len(first) == READ_SIZE
    _write_all(1, first)
    # Once the pipe is empty the relay has read all of it: the next write is a read of its own.
    deadline = time.monotonic() + RELAY_WAIT
    while _unread(1):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the relay did not read the pipe in {RELAY_WAIT} s")
        time.sleep(0.001)
    _write_all(1, b"\nafter\r\n")


def _unread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
