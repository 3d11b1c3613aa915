"""The ``spawnkit`` command, run as users run it: ``python -m spawnkit`` in a subprocess.

Each test runs the command in its own ``tmp_path``, with the targets of ``_cli_targets``
copied there (the command makes its working directory importable, as ``python -m`` does).
A test that must know a rank got somewhere waits for a file the rank writes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from spawnkit._registry import plugins
from spawnkit.testing._processes import descendants, wait_for_files, wait_gone

TARGETS = Path(__file__).resolve().parent / "_cli_targets"
# Generous: the stress runs start two suites at once on a small machine.
TIMEOUT = 90
RAISE_LINE = 'raise RuntimeError("rank one broke")'


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    for name in ("clijob.py", "clienv.py", "clipreload.py"):
        shutil.copy(TARGETS / name, tmp_path / name)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": "", **extra}
    env.pop("TMUX", None)
    return env


def _cli(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spawnkit", *argv],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(**env),
    )


def _lines(text: str) -> list[str]:
    return sorted(text.splitlines())


def _no_status_line(stderr: str) -> None:
    """stderr is a pipe here: none of the status line's text or control characters."""
    assert "ranks:" not in stderr
    assert "finished in" not in stderr
    assert "\r" not in stderr
    assert "\x1b" not in stderr


# -- what the ranks run -------------------------------------------------------------------


def test_function_target_gets_the_rank_and_the_args(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "clijob:hello", "good", "day")
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == [f"[rank {r}]: rank {r} says good day" for r in range(2)]
    # stderr is a pipe: no status line, no final line, nothing at all.
    _no_status_line(proc.stderr)
    assert proc.stderr == ""


def test_double_dash_passes_dashed_args(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "clijob:hello", "a", "--", "-x", "--y", "-n", "2")
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == [f"[rank {r}]: rank {r} says a -x --y -n 2" for r in range(2)]


@pytest.mark.parametrize("kind", ["script", "module"])
def test_script_and_module_run_as_main(cwd: Path, kind: str) -> None:
    target = ["clienv.py"] if kind == "script" else ["-m", "clienv"]
    proc = _cli(cwd, "run", "-n", "2", *target, "a", "--", "-b", "--c")
    assert proc.returncode == 0, proc.stderr
    seen = {}
    for line in proc.stdout.splitlines():
        prefix, _, text = line.partition(": ")
        seen[prefix] = json.loads(text)
    assert sorted(seen) == ["[rank 0]", "[rank 1]"]
    ports = set()
    for rank in range(2):
        got = seen[f"[rank {rank}]"]
        assert got["name"] == "__main__"
        assert Path(got["argv"][0]).resolve() == (cwd / "clienv.py").resolve()
        assert got["argv"][1:] == ["a", "-b", "--c"]
        env = got["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert env["MASTER_ADDR"]
        assert env["MASTER_PORT"].isdigit()
        ports.add(env["MASTER_PORT"])
    assert len(ports) == 1  # one job, one rendezvous


def test_unpicklable_return_value_does_not_fail_the_run(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "clijob:unpicklable")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# -- options after TARGET -----------------------------------------------------------------


def _suggestions(stderr: str) -> tuple[list[str], list[str]]:
    """The two commands the refusal suggests: options moved before TARGET, and the words
    after TARGET passed to the job after '--'."""
    found = re.search(
        r"If it is spawnkit's, put it before: (spawnkit run .*?); "
        r"if it is the job's, put it after '--': (spawnkit run .*)$",
        stderr,
        re.MULTILINE,
    )
    assert found, stderr
    return shlex.split(found[1]), shlex.split(found[2])


def _run_suggested(cwd: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    assert command[0] == "spawnkit"
    return _cli(cwd, *command[1:])


def test_option_after_target_is_refused_with_both_orders(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "clijob:hello", "-w")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "option '-w' comes after 'clijob:hello'" in proc.stderr
    assert "spawnkit run -n 2 -w clijob:hello" in proc.stderr
    assert "spawnkit run -n 2 clijob:hello -- -w" in proc.stderr
    # '-w' is the job's: the order with '--' runs it so.
    job_order = _suggestions(proc.stderr)[1]
    done = _run_suggested(cwd, job_order)
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout) == [f"[rank {r}]: rank {r} says -w" for r in range(2)]


def test_spawnkit_option_after_target_is_refused(cwd: Path) -> None:
    proc = _cli(cwd, "run", "clijob:hello", "--timeout", "30")
    assert proc.returncode == 2
    assert "option '--timeout' comes after 'clijob:hello'" in proc.stderr
    spawnkit_order, job_order = _suggestions(proc.stderr)
    assert spawnkit_order == ["spawnkit", "run", "--timeout", "30", "clijob:hello"]
    assert job_order == ["spawnkit", "run", "clijob:hello", "--", "--timeout", "30"]
    done = _run_suggested(cwd, spawnkit_order)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[rank 0]: rank 0 says \n"


def test_suggested_order_keeps_the_jobs_args_after_target(cwd: Path) -> None:
    proc = _cli(cwd, "run", "clijob:hello", "a", "-n", "2")
    assert proc.returncode == 2
    spawnkit_order, job_order = _suggestions(proc.stderr)
    done = _run_suggested(cwd, job_order)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[rank 0]: rank 0 says a -n 2\n"
    done = _run_suggested(cwd, spawnkit_order)
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout) == [f"[rank {r}]: rank {r} says a" for r in range(2)]


def test_option_after_module_is_refused(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-m", "clienv", "-n", "2")
    assert proc.returncode == 2, proc.stdout
    assert "option '-n' comes after '-m clienv'" in proc.stderr


def test_suggested_orders_for_a_module(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "-m", "clienv", "a", "--timeout", "30")
    assert proc.returncode == 2
    assert "option '--timeout' comes after '-m clienv'" in proc.stderr
    spawnkit_order, job_order = _suggestions(proc.stderr)
    for command, argv, ranks in (
        (job_order, ["a", "--timeout", "30"], 2),
        (spawnkit_order, ["a"], 2),
    ):
        done = _run_suggested(cwd, command)
        assert done.returncode == 0, done.stderr
        seen = [json.loads(line.partition(": ")[2]) for line in done.stdout.splitlines()]
        assert len(seen) == ranks
        assert all(s["argv"][1:] == argv for s in seen), seen


def test_an_option_that_is_not_spawnkits_goes_to_the_job(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "1", "clijob:hello", "--lr", "3", "-x")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[rank 0]: rank 0 says --lr 3 -x\n"
    # Among the job's own options, one of spawnkit's is still ambiguous: only it moves.
    proc = _cli(cwd, "run", "clijob:hello", "--lr", "3", "--time", "30")
    assert proc.returncode == 2
    assert "option '--time' comes after 'clijob:hello'" in proc.stderr
    assert "'--lr'" not in proc.stderr
    spawnkit_order, _ = _suggestions(proc.stderr)
    assert spawnkit_order == ["spawnkit", "run", "--time", "clijob:hello", "--lr", "3", "30"]


# -- backend options ----------------------------------------------------------------------


def test_backend_option_reaches_the_backend(cwd: Path) -> None:
    if not plugins().backends["forkserver"].available:
        pytest.skip("the forkserver backend cannot run here")
    argv = ["run", "-n", "2", "--backend", "forkserver"]
    proc = _cli(cwd, *argv, "-o", 'preload=["clipreload"]', "clijob:preloaded")
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == [f"[rank {r}]: rank {r} preloaded: True" for r in range(2)]
    proc = _cli(cwd, *argv, "clijob:preloaded")  # the control: without the option, not
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == [f"[rank {r}]: rank {r} preloaded: False" for r in range(2)]


def test_misspelt_backend_option_gets_the_cli_form(cwd: Path) -> None:
    argv = ["run", "-n", "2", "-b", "forkserver", "-o", "prelod=['json']", "clijob:hello"]
    proc = _cli(cwd, *argv)
    assert proc.returncode == 2
    assert proc.stderr.startswith("spawnkit: error: --option prelod=['json']: ")
    assert "did you mean --option preload=...?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # no rank ran
    # An option of another backend names the backend that takes it, as a flag.
    proc = _cli(cwd, "run", "-b", "spawn", "-o", "preload=['json']", "clijob:quiet")
    assert proc.returncode == 2
    assert "pass --backend forkserver" in proc.stderr
    proc = _cli(cwd, "run", "-o", "preload", "clijob:quiet")
    assert proc.returncode == 2
    assert "--option takes NAME=VALUE" in proc.stderr


# -- targets that parse their own arguments -------------------------------------------------


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A package on PYTHONPATH, away from the working directory, whose module parses
    sys.argv when imported."""
    lib = tmp_path / "lib"
    shutil.copytree(TARGETS / "argpkg", lib / "argpkg")
    return lib


def test_target_module_parses_its_own_arguments_not_spawnkits(cwd: Path, library: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "argpkg.trainer:train", "--lr", "3", PYTHONPATH=str(library))
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == [
        f"[rank {r}]: rank {r} lr 3.0 argv ['--lr', '3']" for r in range(2)
    ]


def test_missing_function_in_an_argument_parsing_module(cwd: Path, library: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "argpkg.trainer:nofn", PYTHONPATH=str(library))
    assert proc.returncode == 2
    assert proc.stderr == (
        "spawnkit: error: module 'argpkg.trainer' has no function 'nofn'; it has: evaluate, train\n"
    )


# -- the flags' own words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["-n", "4", "--ranks", "5"],
            "--ranks 5: the choice of ranks to show names rank 5, but the job has ranks 0 to 3",
        ),
        (["--redirect", "out"], "--redirect out: redirect sends the ranks' output to log files"),
        (["--tee", "err"], "--tee err: tee sends the ranks' output to log files"),
        (["--log-dir", "logs", "--redirect", "err", "--tee", "out"], "--tee out: tee echoes"),
        (["--prefix", "{x}"], "--prefix '{x}': prefix '{x}' is not a valid format"),
        (["-n", "0"], "argument -n/--nprocs: expected a number of ranks >= 1, not '0'"),
        (["--timeout", "-1"], "argument --timeout: expected a number of seconds >= 0"),
        (["--grace-period", "x"], "argument --grace-period: expected a number of seconds"),
        (["-b", "forkserve"], "unknown backend 'forkserve'"),
        (["-w", "nowatch"], "unknown watch 'nowatch'"),
    ],
    ids=[
        "ranks",
        "redirect",
        "tee",
        "tee-not-redirected",
        "prefix",
        "nprocs",
        "timeout",
        "grace-period",
        "backend",
        "watch",
    ],
)
def test_flag_errors_name_the_flag(cwd: Path, flags: list[str], message: str) -> None:
    proc = _cli(cwd, "run", *flags, "clijob:quiet")
    assert proc.returncode == 2
    assert message in proc.stderr
    for python in (
        "log_dir=",
        "redirect=",
        "ranks names",
        "pass backend=",
        "watch=",
        "prefix must",
    ):
        assert python not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (cwd / "logs").exists()


# -- where the output goes ----------------------------------------------------------------


def _stream_lines(rank: int, stream: str) -> list[str]:
    return [f"print-{stream} {rank}", f"write-{stream} {rank}"]


@pytest.mark.parametrize(
    ("options", "logged", "shown"),
    [
        (["--redirect", "all", "--tee", "all"], ("out", "err"), ("out", "err")),
        ([], ("out", "err"), ()),  # --log-dir alone redirects both, shows neither
        (["--redirect", "out"], ("out",), ("err",)),  # stderr is not redirected: shown
    ],
)
def test_log_dir_redirect_and_tee(
    cwd: Path, options: list[str], logged: tuple[str, ...], shown: tuple[str, ...]
) -> None:
    logs = cwd / "logs"
    proc = _cli(cwd, "run", "-n", "2", "--log-dir", "logs", *options, "clijob:streams")
    assert proc.returncode == 0, proc.stderr
    for rank in range(2):
        for stream in ("out", "err"):
            path = logs / str(rank) / f"std{stream}.log"
            if stream in logged:
                # Python's print and a write to the descriptor itself, in order.
                assert path.read_text().splitlines() == _stream_lines(rank, stream)
            else:
                assert not path.exists()
    for stream, text in (("out", proc.stdout), ("err", proc.stderr)):
        expected = []
        if stream in shown:
            expected = [
                f"[rank {r}]: {line}" for r in range(2) for line in _stream_lines(r, stream)
            ]
        assert _lines(text) == sorted(expected), stream


def test_ranks_shows_only_those_ranks(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "--ranks", "0", "clijob:hello", "hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[rank 0]: rank 0 says hi\n"


def test_ranks_with_tee_still_logs_every_rank(cwd: Path) -> None:
    proc = _cli(
        cwd, "run", "-n", "3", "--ranks", "0,2", "--log-dir", "logs", "--tee", "all",
        "clijob:streams",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for stream, text in (("out", proc.stdout), ("err", proc.stderr)):
        expected = [f"[rank {r}]: {line}" for r in (0, 2) for line in _stream_lines(r, stream)]
        assert _lines(text) == sorted(expected)
        for rank in range(3):
            log = cwd / "logs" / str(rank) / f"std{stream}.log"
            assert log.read_text().splitlines() == _stream_lines(rank, stream)


@pytest.mark.parametrize(
    ("prefix", "shown"),
    [("<{rank}> ", "<{rank}> rank {rank} says hi"), ("", "rank {rank} says hi")],
)
def test_custom_prefix(cwd: Path, prefix: str, shown: str) -> None:
    proc = _cli(cwd, "run", "-n", "2", "--prefix", prefix, "clijob:hello", "hi")
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == sorted(shown.format(rank=r) for r in range(2))


# -- failures -----------------------------------------------------------------------------


def _pids(folder: Path, nprocs: int) -> list[int]:
    return [int((folder / f"ready{rank}").read_text()) for rank in range(nprocs)]


@pytest.mark.parametrize(
    ("how", "status", "cause"),
    [
        ("raise", 1, "raised RuntimeError: rank one broke"),
        ("exit", 7, "exited with code 7"),
        ("segv", 128 + 11, "died from SIGSEGV (a crash in native code: the faulthandler"),
        ("sigkill", 128 + 9, "died from SIGKILL (killed by force: often the out-of-memory"),
    ],
)
def test_failure_summary(cwd: Path, how: str, status: int, cause: str) -> None:
    proc = _cli(
        cwd, "run", "-n", "2", "--log-dir", "logs", "--json", "report.json",
        "clijob:fail", str(cwd), how,
    )  # fmt: skip
    err = proc.stderr
    assert proc.returncode == status, err
    pid0, pid1 = _pids(cwd, 2)
    # Rank 0 was still running: spawnkit says it stops it, before the summary.
    stopping = "spawnkit: stopping 1 rank (SIGTERM, then SIGKILL after 5 s)...\n"
    assert err.count(stopping) == 1
    assert "still running after" not in err  # rank 0 stopped at SIGTERM
    summary = err.index("== spawnkit job: 1 of 2 ranks failed (backend ")
    assert err.index(stopping) < summary
    block = err[summary:]
    assert re.search(rf"^root cause:\n  rank 1 \(pid {pid1}\) after [\d.]+ s: ", block, re.M)
    assert cause in block
    assert f"    stderr log: {cwd / 'logs' / '1' / 'stderr.log'}" in block
    assert re.search(rf"^stopped by spawnkit: rank 0 \(pid {pid0}\) after [\d.]+ s$", block, re.M)
    _no_status_line(err)
    # The root cause's traceback, once: not again in the summary, nor from the library's log.
    assert err.count(RAISE_LINE) == (1 if how == "raise" else 0)
    if how == "raise":
        assert err.index(RAISE_LINE) < summary
    report = json.loads((cwd / "report.json").read_text())
    assert report["exit_status"] == status
    assert report["root_cause"] == 1
    root = report["ranks"][1]
    assert root["state"] == "failed"
    assert root["pid"] == pid1
    if how == "segv":
        log = (cwd / "logs" / "1" / "stderr.log").read_text()
        assert "Fatal Python error: Segmentation fault" in log
        assert (root["exit_code"], root["signal"]) == (-11, "SIGSEGV")
    if how == "sigkill":
        assert (root["exit_code"], root["signal"]) == (-9, "SIGKILL")
    if how == "raise":
        assert root["error"] == "RuntimeError: rank one broke"


def test_exit_code_on_another_backend(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "-b", "forkserver", "clijob:fail", str(cwd), "exit")
    assert proc.returncode == 7, proc.stderr
    assert "spawnkit: process 1 terminated with exit code 7" in proc.stderr
    assert "== spawnkit job: 1 of 2 ranks failed (backend 'forkserver'" in proc.stderr


def test_sigkill_after_the_grace_period(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "--grace-period", "0.5", "clijob:fail", str(cwd), "stubborn")
    err = proc.stderr
    assert proc.returncode == 3, err
    stopping = "spawnkit: stopping 1 rank (SIGTERM, then SIGKILL after 0.5 s)...\n"
    killing = "spawnkit: 1 rank still running after 0.5 s: SIGKILL to rank 0\n"
    summary = err.index("== spawnkit job: 1 of 2 ranks failed")
    assert err.index(stopping) < err.index(killing) < summary
    assert "exited with code 3" in err[summary:]
    assert "stopped by spawnkit: rank 0" in err[summary:]


def test_json_report(cwd: Path) -> None:
    proc = _cli(
        cwd, "run", "-n", "2", "--log-dir", "logs", "--json", "report.json",
        "clijob:fail", str(cwd), "exit",
    )  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    pids = _pids(cwd, 2)
    report: dict[str, Any] = json.loads((cwd / "report.json").read_text())
    assert report["exit_status"] == 7
    assert report["outcome"] == "failed"
    assert report["root_cause"] == 1
    assert report["failed"] == [1]
    assert isinstance(report["backend"], str)
    assert report["started"] <= report["ended"]
    ranks = report["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    expected = {
        0: {"state": "stopped", "exit_code": -15, "signal": "SIGTERM", "error": None},
        1: {"state": "failed", "exit_code": 7, "signal": None, "error": None},
    }
    for r in ranks:
        rank = r["rank"]
        assert {k: r[k] for k in expected[rank]} == expected[rank]
        assert r["pid"] == pids[rank]
        assert report["started"] <= r["started"] <= r["ended"] <= report["ended"]
        assert r["duration"] == pytest.approx(r["ended"] - r["started"])
        folder = cwd / "logs" / str(rank)
        assert r["logs"] == {
            "stdout": str(folder / "stdout.log"),
            "stderr": str(folder / "stderr.log"),
        }


def test_json_to_stdout_for_a_success(cwd: Path) -> None:
    proc = _cli(cwd, "run", "-n", "2", "--json", "-", "clijob:quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["exit_status"], report["outcome"], report["root_cause"]) == (
        0,
        "succeeded",
        None,
    )
    assert report["failed"] == []
    for rank, r in enumerate(report["ranks"]):
        assert r["rank"] == rank
        assert (r["state"], r["exit_code"], r["signal"], r["error"]) == ("succeeded", 0, None, None)
        assert isinstance(r["pid"], int)
        assert r["logs"] == {}


def test_timeout_exits_124_and_names_the_running_ranks(cwd: Path) -> None:
    proc = _cli(
        cwd, "run", "-n", "2", "--timeout", "1", "--json", "report.json", "clijob:idle", str(cwd)
    )
    err = proc.stderr
    assert proc.returncode == 124, err
    assert "the job's deadline of 1 s passed with 2 ranks still running: rank 0 (for" in err
    assert ", rank 1 (for " in err
    summary = err.index("== spawnkit job: deadline of 1 s passed with 2 of 2 ranks running")
    assert re.search(
        r"^still running at the deadline, stopped: rank 0 \(pid \d+\) after [\d.]+ s, "
        r"rank 1 \(pid \d+\) after [\d.]+ s$",
        err[summary:],
        re.M,
    )
    report = json.loads((cwd / "report.json").read_text())
    assert (report["exit_status"], report["outcome"]) == (124, "timed out")
    assert [r["state"] for r in report["ranks"]] == ["stopped", "stopped"]
    # Nothing outlives the command (a rank left behind would now be our child: the suite
    # runs as a subreaper).
    assert not {r["pid"] for r in report["ranks"]} & set(descendants())


def test_ctrl_c_stops_the_job_and_exits_130(cwd: Path) -> None:
    argv = ["run", "-n", "2", "--json", "report.json", "clijob:idle", str(cwd)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spawnkit", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        wait_for_files(cwd / "ready0", cwd / "ready1", timeout=TIMEOUT)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert out == ""
    assert "spawnkit: stopping 2 ranks (SIGTERM, then SIGKILL after 5 s)...\n" in err
    assert "spawnkit: interrupted; the job was stopped" in err
    report = json.loads((cwd / "report.json").read_text())
    assert report["exit_status"] == 130
    assert [r["state"] for r in report["ranks"]] == ["stopped", "stopped"]
    assert not set(_pids(cwd, 2)) & set(descendants())


def test_a_json_path_that_cannot_be_written_is_refused_before_any_rank_runs(cwd: Path) -> None:
    # Each rank leaves a file behind: the proof that it ran.
    (cwd / "mark.py").write_text("import os\nopen('ran' + os.environ['RANK'], 'w').close()\n")
    refused = {
        os.path.join("missing", "report.json"): "does not exist; create it first",
        ".": "is a directory; give a file path",
        os.path.join("mark.py", "report.json"): "is not a directory; give another path",
    }
    for path, wrong in refused.items():
        proc = _cli(cwd, "run", "-n", "2", "--json", path, "mark.py")
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"spawnkit: error: --json {path!r}: "), proc.stderr
        assert wrong in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
        assert not list(cwd.glob("ran*")), f"a rank ran despite --json {path!r}"
    # The same job with a path it can write runs both ranks and writes the report.
    proc = _cli(cwd, "run", "-n", "2", "--json", "report.json", "mark.py")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in cwd.glob("ran*")) == ["ran0", "ran1"]
    assert json.loads((cwd / "report.json").read_text())["outcome"] == "succeeded"


# -- errors of the command itself, listings -------------------------------------------------


def test_exceptions_show_their_public_module(cwd: Path) -> None:
    code = (
        "import spawnkit, clijob\n"
        "if __name__ == '__main__':\n"
        "    spawnkit.spawn(clijob.quiet, nprocs=1, redirect='all')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert proc.returncode == 1
    assert "\nspawnkit.ConfigError: redirect sends the ranks' output to log files" in proc.stderr
    assert "spawnkit._errors" not in proc.stderr


def test_bad_option_value_is_an_error_not_a_traceback(cwd: Path) -> None:
    proc = _cli(cwd, "run", "--redirect", "all", "clijob:quiet")
    assert proc.returncode == 2
    assert proc.stderr.startswith("spawnkit: error: --redirect all: redirect sends")
    assert "pass --log-dir PATH" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_backend_variable_typo_names_the_variable(cwd: Path) -> None:
    proc = _cli(cwd, "run", "clijob:quiet", SPAWNKIT_BACKEND="typo")
    assert proc.returncode == 2
    assert "$SPAWNKIT_BACKEND='typo' names no installed backend" in proc.stderr
    assert "unset the environment variable SPAWNKIT_BACKEND" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_watches_names_autos_pick(cwd: Path) -> None:
    proc = _cli(cwd, "watches")
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"^auto: '(\w+)' here \(the best available\)$", proc.stdout, re.M)
    assert found, proc.stdout
    assert found[1] == plugins().watch("auto").name
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:] if line}
    assert rows[found[1]] == "available"


def test_backends_lists_the_builtin_ones(cwd: Path) -> None:
    proc = _cli(cwd, "backends")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    for name in ("fork", "forkserver", "spawn"):
        assert rows[name][1:3] == ["available", "spawnkit"]


def test_version(cwd: Path) -> None:
    import spawnkit

    proc = _cli(cwd, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"spawnkit {spawnkit.__version__}\n"


@pytest.mark.parametrize("kind", ["backends", "watches"])
def test_listing_help_describes_the_command(cwd: Path, kind: str) -> None:
    proc = _cli(cwd, kind, "--help")
    assert proc.returncode == 0, proc.stderr
    description = proc.stdout.split("\n\n")[1]
    assert description.startswith(f"List the installed {'parent-death ' * (kind == 'watches')}")
    check = " ".join(proc.stdout.rpartition("--check")[2].split())
    assert check.startswith(f"exit with status 1 if two {kind} share a name")


def test_bad_target(cwd: Path) -> None:
    proc = _cli(cwd, "run", "clijob")
    assert proc.returncode == 2
    assert "TARGET must be 'package.module:function', a script path" in proc.stderr
    assert "not 'clijob'" in proc.stderr
    proc = _cli(cwd, "run", "-b", "nope", "clijob:hello")
    assert proc.returncode == 2
    assert "unknown backend 'nope'" in proc.stderr


# -- the live status line, on a terminal -----------------------------------------------------


def _tmux(socket: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["tmux", "-L", socket, *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    return done.stdout


def _screen_until(socket: str, deadline: float, *wanted: re.Pattern[str]) -> str:
    """Poll the pane until all of ``wanted`` are on it; fail at ``deadline`` showing it."""
    while True:
        screen = _tmux(socket, "capture-pane", "-p", "-t", "job")
        missing = [w.pattern for w in wanted if not w.search(screen)]
        if not missing:
            return screen
        if time.monotonic() > deadline:
            raise AssertionError(f"never on the screen: {missing}; it shows:\n{screen}")
        time.sleep(0.05)


def test_status_line_on_a_terminal(cwd: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: this test needs it for a terminal (stderr a tty)")
    config = cwd / "tmux.conf"
    # The pane stays after the command ends, so that the test reads the final screen.
    config.write_text("set -g remain-on-exit on\nset -g status off\nset -g default-shell /bin/sh\n")
    command = (
        f"{shlex.quote(sys.executable)} -m spawnkit run -n 3 clijob:go {shlex.quote(str(cwd))}"
        "; echo EXIT=$? > exit.tmp && mv exit.tmp exit.txt"
    )
    socket = f"spawnkit-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    server = None
    socket_path = None
    try:
        _tmux(
            socket, "-f", str(config), "new-session", "-d", "-s", "job", "-x", "160", "-y", "30",
            "-c", str(cwd), command,
        )  # fmt: skip
        found = _tmux(socket, "display-message", "-p", "#{pid} #{socket_path}")
        server, socket_path = found.strip().split(" ", 1)
        deadline = time.monotonic() + TIMEOUT
        live = re.compile(
            r"^spawnkit: 3 ranks: 3 running, 0 finished, 0 failed \| \d+\.\d s$", re.M
        )
        lines = [re.compile(rf"^\[rank {r}\]: rank {r} waits for go$", re.M) for r in range(3)]
        screen = _screen_until(socket, deadline, live, *lines)
        # The ranks' lines are whole lines of their own, the status line below them.
        rows = [row for row in screen.splitlines() if row.strip()]
        assert live.match(rows[-1]), screen
        assert sorted(rows[:-1]) == [f"[rank {r}]: rank {r} waits for go" for r in range(3)]
        (cwd / "go").touch()
        done = re.compile(r"^spawnkit: 3 ranks finished in \d+\.\d s$", re.M)
        _screen_until(socket, deadline, done)
        wait_for_files(cwd / "exit.txt", timeout=max(1.0, deadline - time.monotonic()))
        assert (cwd / "exit.txt").read_text() == "EXIT=0\n"
        screen = _tmux(socket, "capture-pane", "-p", "-t", "job")
        # The status line was cleared before the final line took its place.
        assert "running" not in screen
        assert "== spawnkit job" not in screen
    finally:
        (cwd / "go").touch()  # the ranks end if the test failed before
        _tmux(socket, "kill-server", check=False)
        if server is not None:
            # It was adopted by this process (a subreaper): wait_gone reaps it. One that
            # outlives this fails the test through the leak guard, naming it.
            wait_gone([int(server)], timeout=10)
        if socket_path is not None:
            Path(socket_path).unlink(missing_ok=True)  # tmux may leave it
