"""What ported torch code relies on, beyond the conformance kit: names, exceptions, logs.

PyTorch's own test/test_multiprocessing_spawn.py exercises these through
``torch.multiprocessing``; here they are tested through spawnkit, written for spawnkit.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import spawnkit
from spawnkit.testing import _targets as t
from spawnkit.testing import wait_for_files

import _torch_compat_targets as tt

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
# Far above what a short program here needs on a loaded machine: past it, it hangs.
PROGRAM_WAIT = 60.0


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


def test_join_with_a_negative_timeout_looks_once_as_torch_s_does(tmp_path: Path) -> None:
    # torch.distributed.elastic polls its job with join(-1).
    ctx = spawnkit.spawn(
        t.cleanup_on_exit, args=(str(tmp_path),), nprocs=1, join=False, backend="fork"
    )
    try:
        wait_for_files(tmp_path / "0.ready")
        assert ctx.join(-1) is False
        assert ctx.join(-0.5, grace_period=1) is False
        ctx.processes[0].join(-1)  # multiprocessing's Process.join takes it too
        assert ctx.processes[0].is_alive()
    finally:
        ctx.terminate()
    with pytest.raises(spawnkit.ConfigError, match="finite"):
        ctx.join(float("nan"))


def test_sentinels_map_each_running_rank_s_sentinel_to_its_rank(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        t.cleanup_on_exit, args=(str(tmp_path),), nprocs=2, join=False, backend="fork"
    )
    try:
        wait_for_files(tmp_path / "0.ready", tmp_path / "1.ready")
        processes = ctx.processes
        assert ctx.sentinels == {processes[0].sentinel: 0, processes[1].sentinel: 1}
    finally:
        ctx.terminate()
    assert ctx.sentinels == {}
    with pytest.raises(AttributeError, match=r"no error files.*remote_traceback"):
        ctx.error_files  # noqa: B018


@pytest.mark.parametrize("backend", ["fork", "spawn", "forkserver", "subprocess"])
def test_the_failure_s_text_and_notes_are_torch_s(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A test written against torch matches the message to its end: pytest.raises(match=)
    # reads the notes too, so a note would break it. The summary goes to the log instead.
    caplog.set_level(logging.WARNING, logger="spawnkit")
    with pytest.raises(spawnkit.ProcessRaisedException, match=r"ValueError: bad input\n$") as info:
        spawnkit.spawn(tt.raise_or_block, nprocs=2, backend=backend)
    assert not hasattr(info.value, "__notes__")
    assert str(info.value).startswith("\n\n-- Process 0 terminated with the following error:\n")
    report = info.value.report
    assert report is not None
    assert caplog.records[-1].getMessage() == report.format()


@pytest.mark.parametrize("backend", ["fork", "spawn", "forkserver", "subprocess"])
def test_a_rank_that_raised_fails_the_job_though_its_process_lives_on(backend: str) -> None:
    # Its report arrives at once; its process would never exit on its own (a non-daemon
    # thread; gloo's teardown takes seconds). The job acts on the report: the deadline
    # only bounds the wait, it is not what ends the job.
    with pytest.raises(spawnkit.ProcessRaisedException, match="its thread lives on") as info:
        spawnkit.spawn(
            tt.raise_while_a_thread_lives, nprocs=2, backend=backend, timeout=60, grace_period=30
        )
    report = info.value.report
    assert report is not None
    failed, stopped = report.ranks
    assert (failed.state, stopped.state) == ("failed", "stopped")
    assert "ValueError: rank 0 failed" in info.value.remote_traceback
    assert failed.error == "ValueError: rank 0 failed, and its thread lives on"
    # Ended by the stop's SIGTERM, or on its own: not by the SIGKILL after the grace period.
    assert failed.signal != "SIGKILL"
    assert not any(psutil.pid_exists(r.pid) for r in report.ranks if r.pid is not None)


# A program that has initialised CUDA, as the fork backend sees one: torch.cuda answers.
_CUDA_PROGRAM = """
import os, sys, types
forks = []
os.register_at_fork(before=lambda: forks.append(1))
torch = types.ModuleType("torch")
torch.cuda = types.SimpleNamespace(is_initialized=lambda: {initialized})
sys.modules["torch"] = torch
import spawnkit
try:
    print(spawnkit.spawn(abs, nprocs=1, backend="fork"))
except spawnkit.ConfigError as exc:
    print(type(exc).__name__, exc)
print("forks:", len(forks))
"""


@posix
@pytest.mark.parametrize("initialized", [True, False])
def test_fork_refuses_a_process_that_initialised_cuda_before_any_fork(initialized: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CUDA_PROGRAM.format(initialized=initialized)],
        capture_output=True,
        text=True,
        timeout=PROGRAM_WAIT,
        check=True,
    )
    if initialized:
        assert result.stdout.startswith("ConfigError backend 'fork' cannot run this job: ")
        assert "Cannot re-initialize CUDA in forked subprocess" in result.stdout
        assert "Use backend 'spawn', 'forkserver' or 'subprocess'" in result.stdout
        assert result.stdout.endswith("forks: 0\n")
    else:
        assert result.stdout.startswith("[0]\n")


def test_a_failure_without_torch_loaded_imports_nothing_of_torch() -> None:
    # Importing torch costs seconds: spawnkit's failures become torch's only where the
    # program has loaded it itself (tests/torch_tensors tests that side).
    program = (
        "import pickle, sys, spawnkit\n"
        "from spawnkit.testing._targets import exit_unless\n"
        "try:\n"
        "    spawnkit.spawn(exit_unless, args=(3,), nprocs=1, backend='fork')\n"
        "except spawnkit.ProcessExitedException as exc:\n"
        "    again = pickle.loads(pickle.dumps(exc))\n"
        "    print(type(again) is spawnkit.ProcessExitedException, again.exit_code)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torch'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=PROGRAM_WAIT,
        check=True,
    )
    assert result.stdout == "True 3\n[]\n"
