"""Worker functions for the conformance suite: module level, so every backend can import them."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn


def block_forever() -> NoReturn:
    """Wait until a signal ends the process; no busy loop, no timeout."""
    while True:
        if hasattr(signal, "pause"):
            signal.pause()
        else:  # Windows
            threading.Event().wait()


def times(rank: int, factor: int) -> int:
    return rank * factor


def echo(rank: int, *args: Any) -> tuple[int, tuple[Any, ...]]:
    return rank, args


def identity(rank: int) -> dict[str, int]:
    return {"rank": rank, "pid": os.getpid(), "pgid": os.getpgid(0)}


def loaded_modules(rank: int) -> list[str]:
    return sorted(sys.modules)


def block(rank: int) -> None:
    block_forever()


def wait_for_all(rank: int, nprocs: int, directory: str) -> int:
    """Check in, then wait until every rank has: only passes if all run at the same time."""
    folder = Path(directory)
    (folder / f"{rank}.here").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.here"))) < nprocs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank} waited 60 s for {nprocs} ranks to run together")
        time.sleep(0.005)
    return nprocs


def raise_on(rank: int, bad_rank: int, message: str) -> None:
    if rank == bad_rank:
        raise ValueError(message)
    block_forever()


def raise_everywhere(rank: int) -> None:
    raise ValueError(f"rank {rank} failed")


def exit_with(rank: int, code: Any, how: str) -> None:
    if how == "os._exit":
        os._exit(code)
    if how == "raise":
        raise SystemExit(code)
    sys.exit(code)


def interrupt(rank: int) -> None:
    raise KeyboardInterrupt


def kill_self(rank: int, signum: int) -> None:
    import faulthandler

    faulthandler.disable()  # a fork child inherits pytest's: keep its dump out of the log
    os.kill(os.getpid(), signum)
    block_forever()


class UnpicklableError(Exception):
    """Holds a lock, which cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable(rank: int) -> None:
    raise UnpicklableError("the lock stays here")


class NeedsTwoArgsError(Exception):
    """Pickles, but its __init__ cannot be called with the pickled args on the way back."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}+{b}")


def raise_unrebuildable(rank: int) -> None:
    raise NeedsTwoArgsError("left", "right")


def raise_huge(rank: int, size: int) -> None:
    raise ValueError("x" * size)


def big_result(rank: int, size: int) -> tuple[int, str]:
    data = os.urandom(size)
    return len(data), hashlib.sha256(data).hexdigest()


def big_payload(rank: int, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def return_bytes(rank: int, size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def return_unpicklable(rank: int) -> Any:
    return threading.Lock()


def note_sigterm_and_block(rank: int, directory: str) -> None:
    """Survive SIGTERM (after noting it), so only SIGKILL can end this worker."""

    def noted(signum: int, frame: object) -> None:
        (Path(directory) / f"{rank}.sigterm").touch()

    signal.signal(signal.SIGTERM, noted)
    (Path(directory) / f"{rank}.ready").touch()
    block_forever()


def cleanup_on_exit(rank: int, directory: str) -> None:
    """Block; a ``finally`` block records that the worker got to clean up."""
    try:
        (Path(directory) / f"{rank}.ready").touch()
        block_forever()
    finally:
        (Path(directory) / f"{rank}.cleaned").touch()


def start_grandchild(rank: int, directory: str) -> None:
    """Start a child that ignores SIGTERM, report its pid, block."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "sys.stdout.write('up\\n'); sys.stdout.flush(); signal.pause()",
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    child.stdout.readline()  # it has installed SIG_IGN
    # Written whole, then renamed: the test reads the pid as soon as the name exists.
    partial = Path(directory) / f"{rank}.grandchild.partial"
    partial.write_text(str(child.pid))
    os.replace(partial, Path(directory) / f"{rank}.grandchild")
    block_forever()


def mixed(rank: int, cycle: int) -> int:
    """Fails on odd cycles for rank 1, succeeds otherwise."""
    if cycle % 2 and rank == 1:
        raise RuntimeError(f"cycle {cycle}")
    return rank


def finish_unless(rank: int, blocked_rank: int) -> int:
    if rank == blocked_rank:
        block_forever()
    return rank


def read_stdin(rank: int) -> str:
    return sys.stdin.read() if sys.stdin is not None else ""
