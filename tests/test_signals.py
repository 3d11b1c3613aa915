"""Signals to the parent while a job runs in the foreground, and signalling process groups.

The end-to-end cases (SIGINT/SIGTERM to a foreground job, Ctrl-C to ``spawnkit run``) are
in :class:`spawnkit.testing.ParentDeathTests`; these look at the handlers themselves.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import spawnkit
from spawnkit._tree import signal_process_group  # core's own; no longer plugin API
from spawnkit.testing import _death_targets as d
from spawnkit.testing import _targets, wait_for_files
from spawnkit.testing._death_harness import run_harness

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _handlers() -> dict[int, Any]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


@pytest.fixture
def observe(tmp_path: Path) -> Iterator[Callable[[], dict[int, Any]]]:
    """From a helper thread: the handlers while a rank is running, then let it finish."""
    seen: dict[int, Any] = {}

    def watch() -> None:
        try:
            wait_for_files(tmp_path / "started-0")
            seen.update(_handlers())
        finally:
            (tmp_path / "go").touch()

    thread = threading.Thread(target=watch)
    thread.start()
    yield lambda: seen
    thread.join()


def test_foreground_job_installs_handlers_and_restores_them(
    tmp_path: Path, observe: Callable[[], dict[int, Any]]
) -> None:
    before = _handlers()
    assert spawnkit.spawn(d.check_in_and_wait, args=(str(tmp_path),)) == [0]
    during = observe()
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert during[sig] is not before[sig]
        assert getattr(during[sig], "__module__", None) == "spawnkit._signals.foreground"
    assert _handlers() == before


def test_handlers_are_restored_after_a_failing_job() -> None:
    before = _handlers()
    with pytest.raises(spawnkit.ProcessRaisedException):
        spawnkit.spawn(_targets.raise_on, args=(0, "boom"))
    assert _handlers() == before


def test_an_ignored_signal_stays_ignored(
    tmp_path: Path, observe: Callable[[], dict[int, Any]]
) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        spawnkit.spawn(d.check_in_and_wait, args=(str(tmp_path),))
        assert observe()[signal.SIGINT] is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_nothing_is_installed_from_another_thread(tmp_path: Path) -> None:
    before = _handlers()
    outcome: list[Any] = []

    def run() -> None:
        outcome.append(spawnkit.spawn(d.check_in_and_wait, args=(str(tmp_path),)))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for_files(tmp_path / "started-0")
        during = _handlers()
    finally:
        (tmp_path / "go").touch()
        thread.join()
    assert during == before
    assert outcome == [[0]]


@posix
def test_second_ctrl_c_does_not_cut_the_graceful_stop_short(tmp_path: Path) -> None:
    # The workers outlast their SIGTERM, so the stop lasts the whole grace period; the
    # second SIGINT arrives in the middle of it and must change nothing.
    job = {"backend": "spawn", "watch": "auto", "nprocs": 2}
    result = run_harness(
        tmp_path, [job], mode="signal", signal="SIGINT", twice=True, sigterm=["linger"]
    )
    assert result["error"] is None, result
    assert result["remaining"] == [], result
    assert result["strays"] == [], result
    (interrupted,) = [e for e in result["events"] if e["event"] == "interrupted"]
    assert interrupted["live_children"] == [], result
    assert result["parent_returncode"] == -signal.SIGINT, result


@pytest.mark.parametrize("pid", [0, -1, -12345, True])
def test_signal_process_group_refuses_what_is_not_a_worker_pid(pid: int) -> None:
    with pytest.raises(ValueError, match="positive process id"):
        signal_process_group(pid, signal.SIGTERM)
