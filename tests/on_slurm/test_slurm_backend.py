"""The ``slurm`` backend on a real one-node Slurm cluster (``run.sh``): the kit's universal
tier, and what only Slurm has (its environment, a killed task, a refused request, the job's
process killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import spawnkit
from spawnkit.testing import BackendSuite, wait_for_files
from spawnkit.testing import _targets as t
from spawnkit.testing._processes import wait_gone

pytestmark = pytest.mark.timeout(120)


class TestSlurm(BackendSuite):
    backends = ("slurm",)
    opt_in = ("exit signals",)


def slurm_environment(rank: int) -> dict[str, str]:
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    keys += ("SLURM_PROCID", "SLURM_JOB_ID", "SLURM_STEP_ID")
    return {key: os.environ[key] for key in keys}


def write_pid_then_block(rank: int, directory: str) -> None:
    # Whole or not at all: the test reads the file as soon as it exists.
    Path(directory, f"{rank}.tmp").write_text(str(os.getpid()))
    os.replace(Path(directory, f"{rank}.tmp"), Path(directory, f"{rank}.pid"))
    t.block_forever()


def raise_or_block(rank: int, directory: str) -> None:
    if rank == 0:
        wait_for_files(Path(directory, "1.pid"))  # the peer is running
        raise RuntimeError("rank 0 failed")
    write_pid_then_block(rank, directory)


def _steps() -> list[str]:
    out = subprocess.run(
        ["squeue", "--steps", "-h", "-o", "%i"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [line for line in out.stdout.split() if not line.endswith(".extern")]


def _no_step_left(timeout: float = 30) -> None:
    # Slurm completes a step asynchronously: wait for the queue to empty, bounded.
    import time

    deadline = time.monotonic() + timeout
    while _steps() or _jobs():
        assert time.monotonic() < deadline, f"left in Slurm: {_steps()} {_jobs()}"
        time.sleep(0.1)


def _jobs() -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.split()


def test_the_rank_environment_is_torchruns_plus_slurms() -> None:
    got = spawnkit.spawn(slurm_environment, nprocs=3, backend="slurm")
    assert [g["RANK"] for g in got] == ["0", "1", "2"]
    assert [g["SLURM_PROCID"] for g in got] == ["0", "1", "2"]
    assert {g["WORLD_SIZE"] for g in got} == {"3"}
    assert [g["LOCAL_RANK"] for g in got] == ["0", "1", "2"]  # one node
    assert {g["LOCAL_WORLD_SIZE"] for g in got} == {"3"}
    assert {g["MASTER_ADDR"] for g in got} == {"localhost"}  # the step's first node
    (port,) = {g["MASTER_PORT"] for g in got}
    assert 0 < int(port) < 65536
    assert len({(g["SLURM_JOB_ID"], g["SLURM_STEP_ID"]) for g in got}) == 1  # one step
    _no_step_left()


def test_an_error_keeps_its_class_and_its_remote_traceback() -> None:
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(t.raise_on, args=(1, "bad input"), nprocs=2, backend="slurm")
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.error_index == 1
    assert "raise_on" in info.value.remote_traceback


def test_a_killed_rank_is_its_signal_and_its_peer_ends(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        write_pid_then_block, args=(str(tmp_path),), nprocs=2, join=False, backend="slurm"
    )
    wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
    pids = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        ctx.join(timeout=60)
    assert info.value.error_index == 1
    assert info.value.signal_name == "SIGKILL"
    assert wait_gone(pids, timeout=30) == set()
    _no_step_left()


def test_a_failing_rank_stops_a_hanging_peer(tmp_path: Path) -> None:
    with pytest.raises(spawnkit.ProcessRaisedException, match="rank 0 failed"):
        spawnkit.spawn(raise_or_block, args=(str(tmp_path),), nprocs=2, backend="slurm")
    assert wait_gone([int((tmp_path / "1.pid").read_text())], timeout=30) == set()
    _no_step_left()


def test_terminate_ends_the_step(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        write_pid_then_block, args=(str(tmp_path),), nprocs=2, join=False, backend="slurm"
    )
    wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
    pids = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
    ctx.terminate(grace_period=1)
    with pytest.raises(spawnkit.JobTerminatedError):
        ctx.join()
    assert wait_gone(pids, timeout=30) == set()
    _no_step_left()


def note_sigterm_then_block(rank: int, directory: str) -> None:
    def noted(signum: int, frame: object) -> None:
        Path(directory, f"{rank}.stopped").touch()
        os._exit(0)

    signal.signal(signal.SIGTERM, noted)
    write_pid_then_block(rank, directory)


def test_terminate_asks_each_rank_to_stop_before_anything_is_killed(tmp_path: Path) -> None:
    # A grace far beyond the test's bound: only the stop sent to each rank, never the step's
    # end after the grace, can make the ranks' own handlers run.
    ctx = spawnkit.spawn(
        note_sigterm_then_block, args=(str(tmp_path),), nprocs=2, join=False, backend="slurm"
    )
    wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
    ctx.terminate(grace_period=3600)
    with pytest.raises(spawnkit.JobTerminatedError):
        ctx.join()
    assert sorted(p.name for p in tmp_path.glob("*.stopped")) == ["0.stopped", "1.stopped"]
    _no_step_left()


def test_the_deadline_ends_the_step(tmp_path: Path) -> None:
    with pytest.raises(spawnkit.SpawnTimeoutError):
        spawnkit.spawn(
            write_pid_then_block, args=(str(tmp_path),), nprocs=2, backend="slurm", timeout=3
        )
    pids = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
    assert wait_gone(pids, timeout=30) == set()
    _no_step_left()


def test_an_invalid_partition_is_a_launch_error_saying_what_slurm_said() -> None:
    with pytest.raises(spawnkit.LaunchError) as info:
        spawnkit.spawn(t.times, args=(1,), nprocs=2, backend="slurm", partition="nowhere")
    assert "--partition=nowhere" in str(info.value)
    assert "invalid partition" in str(info.value).lower()
    _no_step_left()


def test_resources_the_cluster_lacks_are_a_launch_error() -> None:
    with pytest.raises(spawnkit.LaunchError, match="Invalid generic resource"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="slurm", gpus_per_task=1)
    _no_step_left()


def test_pending_past_queue_timeout_is_a_launch_error() -> None:
    # More CPUs than the node has: Slurm queues it; srun gives up after queue_timeout.
    with pytest.raises(spawnkit.LaunchError, match="queue_timeout=1") as info:
        spawnkit.spawn(
            t.times, args=(1,), nprocs=1, backend="slurm", cpus_per_task=1000, queue_timeout=1
        )
    assert "--cpus-per-task=1000" in str(info.value)
    _no_step_left()


def test_bad_options_are_refused_before_anything_starts() -> None:
    with pytest.raises(spawnkit.InvalidArgumentError, match="nodes must be an int"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="slurm", nodes="2")
    with pytest.raises(spawnkit.ConfigError, match="more than the job's 1 rank"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="slurm", nodes=2)
    with pytest.raises(spawnkit.ConfigError, match="may not set '--ntasks'"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="slurm", srun_args=["--ntasks=4"])
    with pytest.raises(spawnkit.ConfigError, match="is not a Slurm time"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="slurm", time="soon")
    assert _jobs() == []


DRIVER = """
    import os, time
    from pathlib import Path
    import spawnkit

    def rank(i, directory):
        Path(directory, f"{i}.tmp").write_text(str(os.getpid()))
        os.replace(Path(directory, f"{i}.tmp"), Path(directory, f"{i}.pid"))
        time.sleep(600)

    if __name__ == "__main__":
        spawnkit.spawn(rank, args=(os.getcwd(),), nprocs=2, backend="slurm")
"""


@pytest.mark.parametrize(
    "how", ["the job's process", "its whole process group", "a task that does not see it"]
)
def test_a_sigkilled_job_leaves_no_task(tmp_path: Path, how: str) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    env = dict(os.environ)
    if how == "a task that does not see it":
        # Its tasks keep their workers when the job's connection ends (a partitioned node):
        # only the keeper's scancel ends them.
        env["SPAWNKIT_SLURM_TEST_TASK_KEEPS_WORKER"] = "1"
    driver = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, start_new_session=True, env=env
    )
    try:
        wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
        ranks = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
        tasks = {p.pid for r in ranks for p in psutil.Process(r).parents()[:1]}
        assert _steps()
        if how != "its whole process group":
            os.kill(driver.pid, signal.SIGKILL)
        else:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_gone([*ranks, *tasks], timeout=60) == set()
        _no_step_left()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except OSError:
            pass
        driver.wait()


def test_ctrl_c_to_the_job_ends_the_step_then_the_job(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    # A session of its own: the driver's group is what a terminal's Ctrl-C would reach.
    driver = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True)
    try:
        wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
        ranks = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
        os.killpg(driver.pid, signal.SIGINT)
        # Python ends an uncaught KeyboardInterrupt by dying of SIGINT.
        assert driver.wait(timeout=60) == -signal.SIGINT
        assert wait_gone(ranks, timeout=30) == set()
        _no_step_left()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except OSError:
            pass
        driver.wait()
