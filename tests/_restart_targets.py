"""What the ranks of tests/test_restarts.py run: module level, so every backend imports it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def attempt() -> int:
    return int(os.environ["TORCHELASTIC_RESTART_COUNT"])


def always_fail(rank: int) -> None:
    raise ValueError(f"attempt {attempt()} failed")


def exit_3(rank: int) -> None:
    sys.exit(3)


def wait_for_a_kill_on_attempt_0(rank: int, directory: str) -> int:
    """Attempt 0 tells its pid and waits to be killed; later attempts return theirs."""
    if attempt() == 0:
        partial = Path(directory) / f"{rank}.pid.partial"
        partial.write_text(str(os.getpid()))
        os.replace(partial, Path(directory) / f"{rank}.pid")
        while True:
            signal.pause()
    return attempt()


def fail_after_a_second(rank: int) -> None:
    time.sleep(1)  # an attempt lasts at least this long, whatever the load
    raise ValueError(f"attempt {attempt()} failed")


def print_master_then_fail_once(rank: int) -> int:
    print(f"attempt {attempt()} port {os.environ['MASTER_PORT']}", flush=True)
    if rank == 1 and attempt() == 0:
        raise ValueError("rank 1 fails on attempt 0")
    return int(os.environ["MASTER_PORT"])


def fail_then_wait(rank: int, directory: str) -> None:
    """Attempt 0 fails; any later attempt marks that it ran."""
    if attempt() == 0:
        raise ValueError("attempt 0 failed")
    (Path(directory) / f"attempt{attempt()}").touch()


def block(rank: int) -> None:
    while True:
        signal.pause()
