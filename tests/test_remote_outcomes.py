"""What a remote backend's ranks hand back: a rank core stopped counts as stopped however its
worker met the stop, and an exception class of the user's script arrives as that class."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import spawnkit
from spawnkit._registry import plugins

import _remote_outcome_targets as t

posix = pytest.mark.skipif(sys.platform == "win32", reason="the workers meet SIGTERM")


def _register(monkeypatch: pytest.MonkeyPatch, mode: str) -> str:
    registry = plugins()
    name = f"graceful-{mode}"
    info = dataclasses.replace(
        registry.backend("spawn"),
        name=name,
        factory=lambda: t.GracefulBackend(mode),
        remote=True,
        pickles=True,
        watches="own",
    )
    monkeypatch.setitem(registry.backends, name, info)
    return name


@posix
@pytest.mark.parametrize("mode", ["terminated", "cancelled"])
def test_a_remote_rank_stopped_after_a_failure_is_stopped_not_also_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    backend = _register(monkeypatch, mode)
    marker = str(tmp_path / "rank-1-runs")
    with pytest.raises(spawnkit.ProcessRaisedException, match="failed on purpose") as caught:
        # A grace far past a graceful stop's length: the worker's own handler ends rank 1.
        spawnkit.spawn(
            t.fail_once_peer_runs, args=(marker,), nprocs=2, backend=backend, grace_period=60
        )
    error = caught.value
    assert [f.error_index for f in error.failures] == [0]
    assert error.report is not None
    assert [r.state for r in error.report.ranks] == ["failed", "stopped"]
    assert "also failed" not in error.report.format()


@posix
def test_terminate_of_a_remote_rank_that_reports_terminated_is_a_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = _register(monkeypatch, "terminated")
    marker = tmp_path / "rank-0-runs"
    ctx = spawnkit.spawn(t.mark_then_block, args=(str(marker),), backend=backend, join=False)
    deadline = time.monotonic() + t.PEER_WAIT
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx.terminate(grace_period=60)
    with pytest.raises(spawnkit.JobTerminatedError):
        ctx.join()
    assert ctx.report().outcome == "stopped"


def test_an_exception_class_of_the_script_arrives_as_that_class_from_a_remote_rank(
    tmp_path: Path,
) -> None:
    pytest.importorskip("cloudpickle")  # what sends the script's functions to a remote rank
    relay = plugins().backends.get("relay")
    if relay is None or relay.unavailable:
        pytest.skip(f"the relay fixture backend: {relay.unavailable if relay else 'missing'}")
    script = tmp_path / "program.py"
    script.write_text(
        textwrap.dedent(
            """
            import spawnkit

            class MyErr(Exception):
                pass

            def bad(rank):
                raise MyErr(f"bad rank {rank}")

            if __name__ == "__main__":
                try:
                    spawnkit.spawn(bad, nprocs=1, backend="relay")
                except spawnkit.ProcessRaisedException as error:
                    print(type(error.exception) is MyErr, repr(error.exception))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout.strip() == "True MyErr('bad rank 0')", proc.stderr
