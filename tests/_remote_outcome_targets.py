"""A small remote-style backend whose workers meet a stop gracefully, and the ranks it runs.

Each rank runs in a new interpreter that calls ``spawnkit.plugin.run_rank`` (a remote
engine's worker does no more) with a SIGTERM handler of its own: ``"terminated"`` raises
spawnkit's ``Terminated``, ``"cancelled"`` raises another exception and the handle tells
core through ``Outcome(stopped=True)`` that the stop it sent ended the rank. The handle has
no pid and no descriptor: a thread waits for the worker and calls ``notify``, as an engine's
completion callback would.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import spawnkit
from spawnkit import plugin

# How long a rank waits for its peer's sign of life: far past any start on a loaded machine.
PEER_WAIT = 60.0


def worker_main() -> None:
    """``python -c``: run the rank the parent sent on stdin, write its report to stdout."""
    spec, mode = pickle.load(sys.stdin.buffer)

    def on_sigterm(signum: int, frame: Any) -> None:
        if mode == "terminated":
            raise spawnkit.Terminated("worker received SIGTERM")
        raise RuntimeError("cancelled by the engine")

    signal.signal(signal.SIGTERM, on_sigterm)
    # Started by start(), while the job held every signal: the mask came along.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    report = plugin.run_rank(spec)
    sys.stdout.buffer.write(pickle.dumps(report))
    sys.stdout.flush()
    sys.exit(report.status)


class GracefulHandle:
    def __init__(self, proc: subprocess.Popen[bytes], mode: str, notify: Callable[[], None]):
        self._proc = proc
        self._mode = mode
        self._stop_sent = False
        self.outcome: plugin.Outcome | None = None
        self._reader = threading.Thread(target=self._wait, args=(notify,))
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return None

    def wait_fds(self) -> tuple[int, ...]:
        return ()

    def poll(self) -> plugin.Outcome | None:
        return self.outcome

    def stop(self, force: bool = False) -> None:
        if self.outcome is None:
            self._stop_sent = True
            self._proc.send_signal(signal.SIGKILL if force else signal.SIGTERM)

    def close(self) -> None:
        self._reader.join()

    def _wait(self, notify: Callable[[], None]) -> None:
        assert self._proc.stdout is not None
        data = self._proc.stdout.read()
        self._proc.stdout.close()
        status = self._proc.wait()
        report = pickle.loads(data) if data else None
        if self._mode == "cancelled":
            # The engine knows its cancel ended the task, whatever the task raised.
            self.outcome = plugin.Outcome(status, report, stopped=self._stop_sent)
        else:
            self.outcome = plugin.Outcome(status, report)
        notify()


class GracefulBackend:
    def __init__(self, mode: str = "terminated") -> None:
        self._mode = mode

    def start(self, spec: plugin.WorkerSpec, notify: Callable[[], None]) -> GracefulHandle:
        code = "import _remote_outcome_targets as t; t.worker_main()"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps((spec, self._mode)))
        proc.stdin.close()
        return GracefulHandle(proc, self._mode, notify)

    def close(self) -> None:
        pass


def mark_then_block(rank: int, marker: str) -> str:
    """Rank 1 (or a job's only rank): say it runs, then run until the job stops it."""
    Path(marker).touch()
    time.sleep(PEER_WAIT)
    return "not stopped"


def fail_once_peer_runs(rank: int, marker: str) -> str:
    """Rank 0 fails once rank 1 runs its code, so the stop finds rank 1 inside ``fn``."""
    if rank != 0:
        return mark_then_block(rank, marker)
    deadline = time.monotonic() + PEER_WAIT
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 1 did not start within {PEER_WAIT} s")
        time.sleep(0.01)
    raise RuntimeError("rank 0 failed on purpose")


class NoHandle:
    """A backend whose start() returns what it should not: ``returns`` (and starts nothing)."""

    def __init__(self, returns: object) -> None:
        self.returns = returns
        self.starts = 0

    def start(self, spec: plugin.WorkerSpec, notify: Callable[[], None]) -> Any:
        self.starts += 1
        return self.returns

    def close(self) -> None:
        pass


class HalfHandle:
    """A handle that forgot ``poll()``."""

    pid = None

    def wait_fds(self) -> tuple[int, ...]:
        return ()

    def stop(self, force: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


def returns_rank(rank: int) -> int:
    return rank
