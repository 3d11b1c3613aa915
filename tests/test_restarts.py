"""Restarts of a failed job (``max_restarts``): what restarts, what each attempt sees and
leaves, how the attempts are reported, and what ends them for good.

That a restart works on every backend is the kit's check
(``test_a_failed_job_restarts_and_each_rank_sees_its_attempt``, and for local backends
``test_nothing_of_a_failed_attempt_is_left_when_the_next_starts``). Here the policy around
it, which core alone decides, runs on one backend.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import spawnkit
from spawnkit.testing import descendants, wait_for_files

import _restart_targets as rt

BACKEND = "forkserver"
TESTS = Path(__file__).resolve().parent
COMMAND = [sys.executable, "-m", "spawnkit", "run"]
ENV = {**os.environ, "PYTHONPATH": str(TESTS)}  # for _restart_targets


def _command(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        check=False,
    )


def test_a_rank_that_always_fails_runs_every_attempt_and_the_report_lists_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delays: list[int] = []
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(
            rt.always_fail,
            nprocs=2,
            backend=BACKEND,
            max_restarts=2,
            restart_delay=lambda n: delays.append(n) or 0.1,
        )
    err = info.value
    assert delays == [1, 2]
    said = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert said[0].startswith("attempt 0 failed (rank ")  # either rank may fail first
    assert said[0].endswith(
        " raised ValueError: attempt 0 failed); restarting in 0.1 s (restart 1 of 2)"
    )
    assert said[1] == "attempt 1 started"
    # What is raised is the last attempt's failure.
    assert str(err.exception) == "attempt 2 failed"
    report = err.report
    assert report is not None
    assert (report.outcome, report.attempt) == ("failed", 2)
    assert [a.attempt for a in report.attempts] == [0, 1]
    for number, earlier in enumerate(report.attempts):
        assert earlier.outcome == "failed"
        assert earlier.root_cause is not None
        assert earlier.root_cause.error == f"ValueError: attempt {number} failed"
        assert earlier.ended is not None
        assert earlier.started <= earlier.ended
    assert report.attempts[0].ended <= report.attempts[1].started  # type: ignore[operator]
    text = report.format()
    assert "attempt 2) ==" in text
    assert "earlier attempts, each failed and restarted:" in text
    assert "raised ValueError: attempt 0 failed" in text
    assert "raised ValueError: attempt 1 failed" in text
    data = report.as_dict()
    assert data["attempt"] == 2
    assert [a["attempt"] for a in data["attempts"]] == [0, 1]
    json.dumps(data)


def test_a_rank_killed_from_outside_is_restarted(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        rt.wait_for_a_kill_on_attempt_0,
        args=(str(tmp_path),),
        nprocs=2,
        join=False,
        backend=BACKEND,
        max_restarts=1,
    )
    wait_for_files(tmp_path / "1.pid")
    earlier = ctx.processes
    os.kill(int((tmp_path / "1.pid").read_text()), signal.SIGKILL)
    assert ctx.results() == [1, 1]
    (first,) = ctx.report().attempts
    assert first.root_cause is not None
    assert (first.root_cause.rank, first.root_cause.signal) == (1, "SIGKILL")
    # The earlier attempt's descriptors were closed with it: their numbers may be reused.
    with pytest.raises(ValueError, match="earlier attempt"):
        earlier[0].sentinel  # noqa: B018
    assert [p.pid for p in ctx.processes] == ctx.pids() != [p.pid for p in earlier]


def test_a_rank_stopped_through_its_process_object_is_not_restarted(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        rt.wait_for_a_kill_on_attempt_0,
        args=(str(tmp_path),),
        join=False,
        backend=BACKEND,
        max_restarts=1,
    )
    wait_for_files(tmp_path / "0.pid")
    ctx.processes[0].terminate()  # torch-style code stops a job this way
    with pytest.raises(spawnkit.ProcessException):
        ctx.join()
    assert (ctx.report().attempt, ctx.report().attempts) == (0, ())


def test_terminate_while_the_next_attempt_is_made_starts_none(tmp_path: Path) -> None:
    # env= is called as each attempt is made, in the thread that waits in join(): a
    # terminate() there is what a signal handler of the program's does at that moment.
    job: list[spawnkit.ProcessContext] = []
    calls = 0

    def env(rank: int) -> dict[str, str]:
        nonlocal calls
        calls += 1
        if calls == 2:  # attempt 1 is being made
            job[0].terminate()
        return {}

    job.append(
        spawnkit.spawn(
            rt.fail_then_wait,
            args=(str(tmp_path),),
            join=False,
            backend=BACKEND,
            max_restarts=1,
            env=env,
        )
    )
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        job[0].join()
    assert str(info.value.exception) == "attempt 0 failed"
    assert (job[0].report().attempt, job[0].report().attempts) == (0, ())
    assert not (tmp_path / "attempt1").exists()


@pytest.mark.parametrize(
    ("target", "rule", "restarted"),
    [
        (rt.always_fail, ValueError, False),
        (rt.always_fail, (KeyError, ValueError), False),
        (rt.always_fail, KeyError, True),
        (rt.exit_3, spawnkit.ProcessExitedException, False),
        (rt.always_fail, spawnkit.ProcessExitedException, True),
        (rt.exit_3, lambda failure: failure.exit_code == 3, False),
        (rt.exit_3, lambda failure: failure.exit_code == 4, True),
    ],
    ids=["type", "tuple", "other type", "exit class", "exit class, raised", "true", "false"],
)
def test_no_restart_on_says_which_failures_end_the_job(
    target: Any, rule: Any, restarted: bool
) -> None:
    with pytest.raises(spawnkit.ProcessException) as info:
        spawnkit.spawn(target, backend=BACKEND, max_restarts=1, no_restart_on=rule)
    report = info.value.report
    assert report is not None
    assert report.attempt == len(report.attempts) == (1 if restarted else 0)


def test_a_restart_policy_that_raises_ends_the_job_with_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(failure: spawnkit.ProcessException) -> bool:
        raise RuntimeError("broken policy")

    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(rt.always_fail, backend=BACKEND, max_restarts=1, no_restart_on=broken)
    assert str(info.value.exception) == "attempt 0 failed"
    record = next(r for r in caplog.records if "restart policy raised" in r.getMessage())
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "broken policy"


def test_a_timeout_never_restarts() -> None:
    with pytest.raises(spawnkit.SpawnTimeoutError) as info:
        spawnkit.spawn(rt.block, backend=BACKEND, max_restarts=3, timeout=0.5)
    assert info.value.report is not None
    assert info.value.report.attempts == ()


def test_the_deadline_covers_every_attempt_together() -> None:
    # Each attempt takes at least a second: a deadline of each attempt's own would let all
    # 100 run (and the test time out); the job's deadline ends it within a few.
    with pytest.raises((spawnkit.SpawnTimeoutError, spawnkit.ProcessRaisedException)) as info:
        spawnkit.spawn(rt.fail_after_a_second, backend=BACKEND, max_restarts=100, timeout=3)
    report = info.value.report  # type: ignore[union-attr]
    assert report is not None
    assert 1 <= len(report.attempts) <= 3


def test_every_attempt_has_a_fresh_master_port_and_logs_of_its_own(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        rt.print_master_then_fail_once,
        nprocs=2,
        join=False,
        backend=BACKEND,
        max_restarts=1,
        log_dir=tmp_path,
    )
    (port, same) = ctx.results()
    assert port == same
    first_log = tmp_path / "attempt_0" / "1" / "stdout.log"  # rank 0 may be stopped first
    assert (tmp_path / "attempt_1" / "0" / "stdout.log").read_text() == f"attempt 1 port {port}\n"
    (first_line,) = first_log.read_text().splitlines()
    assert first_line.startswith("attempt 0 port ")
    assert first_line != f"attempt 0 port {port}"
    report = ctx.report()
    assert report.ranks[0].logs["stdout"] == str(tmp_path / "attempt_1" / "0" / "stdout.log")
    root = report.attempts[0].root_cause
    assert root is not None
    assert root.logs["stderr"] == str(tmp_path / "attempt_0" / "1" / "stderr.log")
    assert "ValueError: rank 1 fails on attempt 0" in Path(root.logs["stderr"]).read_text()


def test_terminate_between_attempts_ends_the_job_without_a_restart(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        rt.fail_then_wait,
        args=(str(tmp_path),),
        join=False,
        backend=BACKEND,
        max_restarts=1,
        restart_delay=600,
    )
    # join() returns at its timeout between attempts, as while ranks run.
    while ctx.report().outcome != "restarting":
        assert ctx.join(timeout=0.05) is False
    # Attempt 0 is still the current one while the next waits.
    assert (ctx.report().attempt, ctx.report().attempts) == (0, ())
    ctx.terminate()
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        ctx.join()
    assert str(info.value.exception) == "attempt 0 failed"
    report = ctx.report()
    assert (report.outcome, report.attempt, report.attempts) == ("failed", 0, ())
    assert not (tmp_path / "attempt1").exists()


def test_ctrl_c_between_attempts_stops_the_job(tmp_path: Path) -> None:
    argv = ["--max-restarts", "3", "--restart-delay", "600", "--json", "report.json"]
    proc = subprocess.Popen(
        [*COMMAND, *argv, "_restart_targets:always_fail"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line == (
            "spawnkit: attempt 0 failed (rank 0 raised ValueError: attempt 0 failed); "
            "restarting in 600 s (restart 1 of 3)\n"
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "spawnkit: interrupted; the job was stopped" in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["outcome"], report["attempt"], report["attempts"]) == ("failed", 0, [])
    assert not {r["pid"] for r in report["ranks"]} & set(descendants())


def test_the_command_restarts_and_lists_the_attempts_in_its_json(tmp_path: Path) -> None:
    done = _command(
        tmp_path,
        *("-n", "2", "--max-restarts", "2", "--log-dir", "logs", "--json", "-"),
        "_restart_targets:print_master_then_fail_once",
    )
    assert done.returncode == 0, done.stderr
    assert (
        "spawnkit: attempt 0 failed (rank 1 raised ValueError: rank 1 fails on attempt 0); "
        "restarting in 0 s (restart 1 of 2)\n"
    ) in done.stderr
    report = json.loads(done.stdout)
    assert (report["outcome"], report["attempt"]) == ("succeeded", 1)
    (first,) = report["attempts"]
    assert (first["outcome"], first["root_cause"]) == ("failed", 1)
    assert sorted(os.listdir(tmp_path / "logs")) == ["attempt_0", "attempt_1"]


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"max_restarts": -1}, spawnkit.ConfigError, "max_restarts must be >= 0, not -1"),
        ({"max_restarts": "2"}, spawnkit.InvalidArgumentError, "max_restarts must be an int"),
        ({"max_restarts": True}, spawnkit.InvalidArgumentError, "max_restarts must be an int"),
        ({"restart_delay": -1}, spawnkit.ConfigError, "restart_delay must be a finite number"),
        ({"restart_delay": math.nan}, spawnkit.ConfigError, "restart_delay must be a finite"),
        ({"restart_delay": 10**400}, spawnkit.ConfigError, "restart_delay must be a finite"),
        ({"restart_delay": "1"}, spawnkit.InvalidArgumentError, "lambda n: min(60, 2 ** n)"),
        ({"no_restart_on": 5}, spawnkit.InvalidArgumentError, "no_restart_on must be an"),
        ({"no_restart_on": (ValueError, 3)}, spawnkit.InvalidArgumentError, "no_restart_on"),
    ],
)
def test_bad_restart_options_are_refused_before_anything_starts(
    options: dict[str, Any], error: type[Exception], text: str, tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        spawnkit.spawn(rt.fail_then_wait, args=(str(tmp_path),), backend=BACKEND, **options)
    assert text in str(info.value)
    assert not list(tmp_path.iterdir())


def test_an_attempt_that_cannot_start_ends_the_command_with_its_report(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "attempt_1").write_text("a file where attempt 1's folder goes")
    done = _command(
        tmp_path,
        *("--max-restarts", "1", "--log-dir", "logs", "--json", "report.json"),
        "_restart_targets:always_fail",
    )
    assert done.returncode == 1, done.stderr
    assert "spawnkit: the job's attempt 1 could not start: log_dir " in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["exit_status"], report["outcome"], report["attempt"]) == (1, "failed", 0)
