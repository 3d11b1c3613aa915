"""What ported torch code relies on, beyond the conformance kit: names, exceptions, logs.

PyTorch's own test/test_multiprocessing_spawn.py exercises these through
``torch.multiprocessing``; here they are tested through spawnkit, written for spawnkit.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import sys
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing import _targets as t
from spawnkit.testing import wait_for_files

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_multiprocessing_names_are_reachable_through_spawnkit() -> None:
    # torch.multiprocessing re-exports multiprocessing; ported code keeps using it that way.
    assert spawnkit.get_context is multiprocessing.get_context  # type: ignore[attr-defined]
    assert spawnkit.SimpleQueue is multiprocessing.SimpleQueue  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        spawnkit.no_such_name  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("backend", ["spawn", "fork", "forkserver", "subprocess"])
def test_ranks_report_on_a_queue_of_the_start_methods_context(backend: str) -> None:
    method = "spawn" if backend == "subprocess" else backend
    queue = spawnkit.get_context(method).SimpleQueue()  # type: ignore[attr-defined]
    spawnkit.start_processes(t.put_rank, args=(queue,), nprocs=2, start_method=backend)
    assert sorted([queue.get(), queue.get()]) == [0, 1]


def test_start_method_none_is_the_platforms_default() -> None:
    default = multiprocessing.get_context().get_start_method()
    (modules,) = spawnkit.start_processes(t.loaded_modules, start_method=None)  # type: ignore[misc]
    # Only a fork worker inherits the parent's spawnkit._api: that tells which ran.
    assert ("spawnkit._api" in modules) == (default == "fork")


def test_the_parallel_start_variable_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    assert spawnkit.ENV_VAR_PARALLEL_START == "TORCH_MP_PARALLEL_START"
    for value in ("0", "1"):
        monkeypatch.setenv(spawnkit.ENV_VAR_PARALLEL_START, value)
        assert spawnkit.start_processes(t.times, args=(2,), nprocs=2, start_method="fork") == [0, 2]


@pytest.mark.parametrize(
    "make",
    [
        lambda: spawnkit.ProcessException("m", 1, error_pid=42),
        lambda: spawnkit.ProcessException("m", 1, 42),
        lambda: spawnkit.ProcessRaisedException("m", error_index=1, error_pid=42),
        lambda: spawnkit.ProcessExitedException(
            "m", error_index=1, error_pid=42, exit_code=-9, signal_name="SIGKILL"
        ),
    ],
    ids=["error_pid", "positional", "raised", "exited"],
)
def test_exceptions_construct_as_torch_constructs_them(make: object) -> None:
    exc = make()  # type: ignore[operator]
    assert (exc.error_index, exc.error_pid, exc.pid) == (1, 42, 42)
    again = pickle.loads(pickle.dumps(exc))
    assert (type(again), again.error_pid, str(again)) == (type(exc), 42, "m")


@posix
def test_stopping_logs_as_torch_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spawnkit")
    ctx = spawnkit.spawn(
        t.note_sigterm_and_block, args=(str(tmp_path),), nprocs=1, join=False, backend="fork"
    )
    wait_for_files(tmp_path / "0.ready")
    (pid,) = ctx.pids()
    ctx.terminate(grace_period=0.2)
    messages = [r.getMessage() for r in caplog.records if r.name == "spawnkit"]
    assert messages == [
        f"Terminating process {pid} via signal SIGTERM",
        f"Unable to shutdown process {pid} via SIGTERM , forcefully exiting via SIGKILL",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


@posix
def test_a_failure_stops_the_sibling_and_every_process_is_gone_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="spawnkit")
    ctx = spawnkit.start_processes(
        t.exit_unless, args=(123,), nprocs=2, join=False, start_method="fork"
    )
    pid1 = ctx.pids()[1]
    expected = "process 0 terminated with exit code 123"
    with pytest.raises(spawnkit.ProcessExitedException, match=expected):  # noqa: PT012
        while not ctx.join(grace_period=None):  # torch's loop, as ported code writes it
            pass
    assert f"Terminating process {pid1} via signal" in caplog.records[0].getMessage()
    assert not any(p.is_alive() for p in ctx.processes)


def test_sys_exit_outside_0_to_255_is_a_failure_not_a_wrapped_success() -> None:
    # Under torch the OS keeps the low byte and sys.exit(256) passes for success.
    with pytest.raises(spawnkit.ProcessRaisedException, match=r"sys.exit\(256\)"):
        spawnkit.spawn(t.exit_with, args=(256, "sys.exit"), backend="fork")
