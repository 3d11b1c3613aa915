"""The launcher's options of ``spawnkit.spawn``: output, environment, per-rank args, deadline,
the failure report, and the input they refuse.

Everything runs real worker processes. A worker says it got somewhere by creating a file,
and the test waits on that file; nothing here sleeps in the hope that a worker got on.
Output is checked in two places: the rank's log files, and the console, which is either
pytest's ``capfd`` or, where the console must be a program's real stdout and stderr, the
pipes of a small program run with :func:`_run_program`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spawnkit
from spawnkit.testing import descendants

import _launch_targets as lt

LOCAL_BACKENDS = ["fork", "spawn", "forkserver", "subprocess"]
TESTS = Path(__file__).resolve().parent
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
# The marker a program prints once spawn() returned: console output after it came too late.
RETURNED = "== spawn() returned =="


def _run_program(
    tmp_path: Path, code: str, *argv: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script in a new interpreter that can import ``_launch_targets``.

    Its stdout and stderr are the console of the job it starts: real descriptors, as a
    user's program has, rather than pytest's capture.
    """
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )


def _before_return(console: str) -> str:
    """What a program wrote before its marker :data:`RETURNED`, which must be there."""
    head, marker, _ = console.partition(RETURNED + "\n")
    assert marker, f"the program never got past spawn():\n{console}"
    assert head.endswith("\n") or not head, "the marker came mid-line"
    return head


def _frames(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def _refused_up_front(exc: BaseException) -> None:
    """``exc`` was raised before the job was launched: no process was started for it."""
    assert "launch" not in _frames(exc), _frames(exc)
    # Printed under its public name, as users write it.
    assert type(exc).__module__ == "spawnkit"
    shown = traceback.format_exception_only(type(exc), exc)[-1]
    assert shown.startswith(f"spawnkit.{type(exc).__name__}: ")


@pytest.fixture
def job_children() -> Iterator[list[int]]:
    """A list to put a job's pids in; checks they are all gone when the test ends."""
    pids: list[int] = []
    yield pids
    assert not set(pids) & set(descendants()), "a rank outlived its job"


# -- output: logs, tee, prefixes -----------------------------------------------------------

SPEAK = f"""
import json, sys
import spawnkit
import _launch_targets as lt

if __name__ == "__main__":
    backend, options = sys.argv[1], json.loads(sys.argv[2])
    results = spawnkit.spawn(lt.speak, nprocs=2, backend=backend, **options)
    assert results == [0, 1], results
    print({RETURNED!r}, flush=True)
    print({RETURNED!r}, file=sys.stderr, flush=True)
"""


def _spoken(stream: str, rank: int) -> list[str]:
    """What ``speak`` writes on ``stream``: by print, by os.write, by a child process."""
    return [f"{how}-{stream} {rank}" for how in ("py", "fd", "sh")]


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
@pytest.mark.parametrize(
    ("options", "redirected", "echoed", "prefix"),
    [
        # log_dir alone: both streams to the logs, none on the console.
        pytest.param({}, {"out", "err"}, set(), None, id="logs-only"),
        # stdout logged and echoed; stderr left as it is, the program's own descriptor.
        pytest.param(
            {"redirect": "out", "tee": "out"}, {"out"}, {"out"}, "[rank {rank}]: ", id="tee-out"
        ),
        # stderr logged and echoed; stdout not logged but relayed with the prefix given.
        pytest.param(
            {"redirect": "err", "tee": "err", "prefix": "<{rank}> "},
            {"err"},
            {"out", "err"},
            "<{rank}> ",
            id="tee-err-prefix-out",
        ),
    ],
)
def test_output_goes_to_the_logs_and_console_it_was_sent_to(
    tmp_path: Path,
    backend: str,
    options: dict[str, Any],
    redirected: set[str],
    echoed: set[str],
    prefix: str | None,
) -> None:
    log_dir = tmp_path / "logs"
    run = _run_program(tmp_path, SPEAK, backend, json.dumps({"log_dir": str(log_dir), **options}))
    assert run.returncode == 0, run.stderr
    console = {"out": _before_return(run.stdout), "err": _before_return(run.stderr)}
    for stream in ("out", "err"):
        shown = console[stream]
        for rank in range(2):
            spoken = _spoken(stream, rank)
            log = log_dir / str(rank) / f"std{stream}.log"
            if stream in redirected:
                # In the order written: print is line-buffered once the stream is pointed.
                assert log.read_text() == "".join(f"{line}\n" for line in spoken)
            else:
                assert not log.exists()
        if stream in echoed:
            assert prefix is not None
            lines = shown.splitlines()
            expected = []
            for rank in range(2):
                mine = prefix.format(rank=rank)
                spoken = [mine + line for line in _spoken(stream, rank)]
                # Whole lines, each rank's in its order, whatever the other rank wrote.
                assert [line for line in lines if line.startswith(mine)] == spoken, shown
                expected += spoken
            assert sorted(lines) == sorted(expected), shown  # and nothing else
        elif stream in redirected:
            assert shown == ""
        else:
            # The program's own descriptor, shared: the ranks' writes may mix mid-line (as
            # they do under multiprocessing when Python runs unbuffered), but all are there.
            written = "".join(f"{line}\n" for rank in range(2) for line in _spoken(stream, rank))
            assert sorted(shown) == sorted(written), shown
            for rank in range(2):
                for line in _spoken(stream, rank):
                    assert line in shown


def test_concurrent_ranks_show_whole_lines_with_their_prefix(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Every line is written in three pieces, by four ranks at once: the relay must cut the
    # console output at line ends only.
    count = 200
    spawnkit.spawn(lt.many_lines, args=(count,), nprocs=4, backend="fork", prefix="[{rank}] ")
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4 * count
    for rank in range(4):
        mine = [line for line in lines if line.startswith(f"[{rank}] ")]
        assert mine == [f"[{rank}] " + lt.line_of(rank, i).decode() for i in range(count)]
    assert err == ""


def test_console_output_is_complete_when_spawn_returns(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The last line has no newline: it is shown, ended, once the rank is gone.
    spawnkit.spawn(lt.unterminated, nprocs=2, backend="fork", prefix="<{rank}> ")
    out, err = capfd.readouterr()
    for stream, text in (("out", out), ("err", err)):
        assert sorted(text.splitlines(keepends=True)) == sorted(
            f"<{rank}> {which} {stream} {rank}\n"
            for rank in range(2)
            for which in ("first", "last")
        )
        for rank in range(2):
            mine = [line for line in text.splitlines() if line.startswith(f"<{rank}> ")]
            assert mine == [f"<{rank}> first {stream} {rank}", f"<{rank}> last {stream} {rank}"]


def test_a_line_longer_than_the_relays_reads_keeps_one_prefix_per_console_line(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Far more than two 64 KiB reads: the relay must show part of it before its end.
    size = 200_000
    spawnkit.spawn(lt.long_line, args=(size,), backend="fork", prefix="[0] ")
    out, _ = capfd.readouterr()
    lines = out.splitlines()
    assert "".join(line.replace("[0] ", "") for line in lines) == "x" * size  # nothing lost
    assert [line.count("[0] ") for line in lines] == [1] * len(lines)


LIVE = f"""
import sys
import spawnkit
import _launch_targets as lt

if __name__ == "__main__":
    directory = sys.argv[1]
    spawnkit.spawn(lt.say_then_wait, args=(directory,), backend="spawn", log_dir="logs", tee="out")
    print({RETURNED!r}, flush=True)
"""


def test_echoed_lines_reach_the_console_while_the_rank_runs(tmp_path: Path) -> None:
    """A printed line is shown as it is printed, not when the rank ends: the rank waits
    for the test to have seen it on the program's stdout before it goes on."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(LIVE))
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    with subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    ) as program:
        try:
            assert program.stdout is not None
            assert program.stdout.readline() == "[rank 0]: hello from 0\n"
            (tmp_path / "go").touch()
            assert program.stdout.read() == f"{RETURNED}\n"
            assert program.wait(timeout=60) == 0
        finally:
            program.kill()
    assert (tmp_path / "logs" / "0" / "stdout.log").read_text() == "hello from 0\n"


def test_ranks_filter_the_console_while_the_logs_keep_everything(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spawnkit.spawn(
        lt.many_lines, args=(3,), nprocs=3, backend="fork", log_dir=tmp_path, tee=True, ranks=[0]
    )
    out, err = capfd.readouterr()
    assert out.splitlines() == [f"[rank 0]: {lt.line_of(0, i).decode()}" for i in range(3)]
    assert err == ""
    for rank in range(3):
        written = b"".join(lt.line_of(rank, i) + b"\n" for i in range(3))
        assert (tmp_path / str(rank) / "stdout.log").read_bytes() == written


def test_ranks_alone_silence_the_other_ranks(capfd: pytest.CaptureFixture[str]) -> None:
    # Without log_dir or prefix, the chosen rank writes to the console as it is.
    spawnkit.spawn(lt.many_lines, args=(2,), nprocs=2, backend="fork", ranks=[1])
    out, _ = capfd.readouterr()
    assert out.splitlines() == [lt.line_of(1, i).decode() for i in range(2)]


# -- environment and per-rank args ---------------------------------------------------------


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_every_rank_sees_torchruns_variables(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    seen = spawnkit.spawn(lt.rank_variables, nprocs=2, backend=backend)
    port = seen[0]["MASTER_PORT"]
    assert port is not None
    assert 0 < int(port) < 65536
    for rank, env in enumerate(seen):
        assert env == {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,  # one port for the whole job
            "SPAWNKIT_TEST_VALUE": None,
        }


def test_the_parents_master_address_and_port_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")
    monkeypatch.setenv("MASTER_PORT", "23456")
    for env in spawnkit.spawn(lt.rank_variables, nprocs=2, backend="fork"):
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.1.2.3", "23456")


def test_env_mapping_reaches_every_rank_and_may_override_rank_variables() -> None:
    env = {"SPAWNKIT_TEST_VALUE": "same", "MASTER_PORT": "1234"}
    seen_by = spawnkit.spawn(lt.rank_variables, nprocs=2, backend="fork", env=env)
    for rank, seen in enumerate(seen_by):
        assert seen["SPAWNKIT_TEST_VALUE"] == "same"
        assert seen["MASTER_PORT"] == "1234"
        assert seen["RANK"] == str(rank)


def test_args_callable_gives_each_rank_its_own_evaluated_before_any_start() -> None:
    children_at_call: list[set[int]] = []

    def args(rank: int) -> tuple[Any, ...]:
        children_at_call.append(set(descendants()))
        return (rank * 10, f"s{rank}")

    # A lambda-like local function: called in the parent, never pickled.
    results = spawnkit.spawn(lt.echo_args, args=args, nprocs=3, backend="spawn")
    assert results == [(0, (0, "s0")), (1, (10, "s1")), (2, (20, "s2"))]
    # Every call saw the same processes: no rank had started yet.
    assert len(children_at_call) == 3
    assert children_at_call[0] == children_at_call[2]


# -- the deadline --------------------------------------------------------------------------


def test_join_timeout_still_returns_false_before_the_jobs_deadline() -> None:
    with spawnkit.spawn(lt.block, nprocs=1, backend="fork", timeout=600, join=False) as ctx:
        assert ctx.join(timeout=0.05) is False
        assert ctx.report().outcome == "running"
    assert ctx.report().outcome == "stopped"
    assert ctx.report().ranks[0].state == "stopped"


# -- the failure report --------------------------------------------------------------------


def test_report_of_a_rank_that_raised(tmp_path: Path, job_children: list[int]) -> None:
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(lt.raise_or_block, nprocs=2, backend="fork", log_dir=tmp_path)
    report = info.value.report
    assert report is not None
    job_children.extend(r.pid for r in report.ranks if r.pid is not None)
    assert report.outcome == "failed"
    assert report.failed == (0,)
    root = report.root_cause
    assert root is not None
    assert (root.rank, root.state, root.error) == (0, "failed", "ValueError: bad input")
    assert root.logs == {
        "stdout": str(tmp_path / "0" / "stdout.log"),
        "stderr": str(tmp_path / "0" / "stderr.log"),
    }
    assert root.duration is not None
    assert report.ranks[1].state == "stopped"
    text = report.format()
    assert "== spawnkit job: 1 of 2 ranks failed (backend 'fork'" in text
    assert "root cause:" in text
    assert "raised ValueError: bad input" in text
    assert f"stderr log: {tmp_path / '0' / 'stderr.log'}" in text
    assert f"stopped by spawnkit: rank 1 (pid {report.ranks[1].pid})" in text
    # Not on the exception as a note: its text and notes stay torch's (see test_torch_compat).
    assert not hasattr(info.value, "__notes__")
    # The same for machines, through JSON and back unchanged.
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["root_cause"] == 0
    assert [r["state"] for r in data["ranks"]] == ["failed", "stopped"]


def test_report_of_a_rank_that_exited_with_a_code(job_children: list[int]) -> None:
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        spawnkit.spawn(lt.exit_or_block, args=(3,), nprocs=2, backend="fork")
    assert info.value.exit_code == 3
    report = info.value.report
    assert report is not None
    job_children.extend(r.pid for r in report.ranks if r.pid is not None)
    root = report.root_cause
    assert root is not None
    assert (root.rank, root.exit_code, root.signal, root.error) == (0, 3, None, None)
    assert root.describe() == "exited with code 3"
    assert report.ranks[1].state == "stopped"


# fork included: under pytest, whose faulthandler is on (on a descriptor of its own), a fork
# worker inherits that setting, and must still write its trace to its own log.
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_report_of_a_segfault_points_at_the_faulthandler_trace(
    tmp_path: Path, backend: str, job_children: list[int]
) -> None:
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        spawnkit.spawn(
            lt.signal_or_block,
            args=(int(signal.SIGSEGV),),
            nprocs=2,
            backend=backend,
            log_dir=tmp_path,
        )
    assert info.value.signal_name == "SIGSEGV"
    report = info.value.report
    assert report is not None
    job_children.extend(r.pid for r in report.ranks if r.pid is not None)
    root = report.root_cause
    assert root is not None
    assert (root.rank, root.exit_code, root.signal) == (0, -signal.SIGSEGV, "SIGSEGV")
    stderr_log = Path(root.logs["stderr"])
    assert stderr_log == tmp_path / "0" / "stderr.log"
    trace = stderr_log.read_text()
    assert "Fatal Python error: Segmentation fault" in trace
    assert "signal_or_block" in trace  # the Python frame that crashed
    text = report.format()
    assert "died from SIGSEGV (a crash in native code" in text
    assert f"stderr log: {stderr_log}" in text


def test_faulthandler_can_be_turned_off(tmp_path: Path) -> None:
    with pytest.raises(spawnkit.ProcessExitedException):
        spawnkit.spawn(
            lt.signal_or_block,
            args=(int(signal.SIGSEGV),),
            backend="forkserver",
            log_dir=tmp_path,
            faulthandler=False,
        )
    assert "Fatal Python error" not in (tmp_path / "0" / "stderr.log").read_text()


FORK_SEGFAULT = """
import faulthandler, sys
import spawnkit
import _launch_targets as lt

if __name__ == "__main__":
    if sys.argv[1] == "parent-faulthandler":
        # The program keeps its own crash traces in a file of its own.
        faulthandler.enable(file=open("parent-faults.log", "w"))
    try:
        spawnkit.spawn(lt.signal_or_block, args=(11,), backend="fork", log_dir="logs")
    except spawnkit.ProcessExitedException as exc:
        assert exc.signal_name == "SIGSEGV", exc
"""


@pytest.mark.parametrize(
    "parent",
    [
        "plain",
        "parent-faulthandler",
    ],
)
def test_fork_rank_segfault_trace_is_in_its_stderr_log(tmp_path: Path, parent: str) -> None:
    run = _run_program(tmp_path, FORK_SEGFAULT, parent)
    assert run.returncode == 0, run.stderr
    assert (
        "Fatal Python error: Segmentation fault"
        in (tmp_path / "logs" / "0" / "stderr.log").read_text()
    )


FORK_PRINT = """
import sys
import spawnkit
import _launch_targets as lt

if __name__ == "__main__":
    # As under pytest's capture or in a Jupyter kernel: sys.stdout is not descriptor 1.
    sys.stdout = open("elsewhere.txt", "w")
    spawnkit.spawn(lt.speak, backend="fork", log_dir="logs")
"""


def test_fork_rank_print_reaches_its_log_when_sys_stdout_is_not_fd_1(tmp_path: Path) -> None:
    run = _run_program(tmp_path, FORK_PRINT)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "logs" / "0" / "stdout.log").read_text() == "".join(
        f"{line}\n" for line in _spoken("out", 0)
    )


def test_report_of_a_rank_killed_by_sigkill(job_children: list[int]) -> None:
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        spawnkit.spawn(lt.signal_or_block, args=(int(signal.SIGKILL),), nprocs=2, backend="fork")
    report = info.value.report
    assert report is not None
    job_children.extend(r.pid for r in report.ranks if r.pid is not None)
    root = report.root_cause
    assert root is not None
    assert (root.rank, root.exit_code, root.signal) == (0, -signal.SIGKILL, "SIGKILL")
    assert "died from SIGKILL (killed by force" in root.describe()
    assert report.as_dict()["ranks"][0]["signal"] == "SIGKILL"


@linux_only
def test_root_cause_is_the_earliest_failure_not_the_lowest_rank(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        lt.fail_in_turn, args=(str(tmp_path),), nprocs=2, backend="fork", join=False
    )
    # A long grace: rank 0 fails on its own too, rather than being stopped.
    with ctx, pytest.raises(spawnkit.ProcessRaisedException) as info:
        ctx.join(grace_period=60)
    error = info.value
    assert error.error_index == 1
    assert "rank 1 failed first" in error.msg
    assert [f.error_index for f in error.failures] == [1, 0]
    report = error.report
    assert report is not None
    assert report.failed == (1, 0)
    assert report.root_cause is not None
    assert report.root_cause.rank == 1
    assert [r.state for r in report.ranks] == ["failed", "failed"]
    assert [r.error for r in report.ranks] == [
        "RuntimeError: rank 0 failed second",
        "RuntimeError: rank 1 failed first",
    ]
    text = report.format()
    assert text.index("root cause:\n  rank 1") < text.index("also failed:\n  rank 0")
    assert "stopped by spawnkit" not in text


def test_report_of_a_running_then_terminated_job() -> None:
    with spawnkit.spawn(lt.block, nprocs=2, backend="fork", join=False) as ctx:
        report = ctx.report()
        assert report.outcome == "running"
        assert [r.state for r in report.ranks] == ["running", "running"]
        assert report.ended is None
        assert report.ranks[0].duration is None
        assert report.root_cause is None
        ctx.terminate()
        report = ctx.report()
    assert report.outcome == "stopped"
    assert [r.state for r in report.ranks] == ["stopped", "stopped"]
    assert "2 ranks stopped" in report.format()


def test_report_of_a_job_that_succeeded() -> None:
    with spawnkit.spawn(lt.echo_args, nprocs=2, backend="fork", join=False) as ctx:
        assert ctx.join(timeout=60) is True
    report = ctx.report()
    assert report.outcome == "succeeded"
    assert report.failed == ()
    assert [r.state for r in report.ranks] == ["succeeded", "succeeded"]
    assert report.duration is not None
    assert json.loads(json.dumps(report.as_dict())) == report.as_dict()


UNCAUGHT = """
import spawnkit
import _launch_targets as lt

if __name__ == "__main__":
    spawnkit.spawn(lt.raise_bad_input, backend="spawn")
"""


def test_an_uncaught_failure_prints_the_workers_traceback_once(tmp_path: Path) -> None:
    run = _run_program(tmp_path, UNCAUGHT)
    assert run.returncode == 1
    assert run.stderr.count('raise ValueError("bad input")') == 1, run.stderr
    assert "spawnkit.RemoteTraceback: the traceback of rank 0 is in the message below" in (
        run.stderr
    )
    last = [line for line in run.stderr.splitlines() if line.startswith("spawnkit.")]
    assert last[-1] == "spawnkit.ProcessRaisedException: ", run.stderr
    if sys.version_info >= (3, 11):
        assert "== spawnkit job: 1 of 1 ranks failed (backend 'spawn'" in run.stderr


# -- input refused before any process starts -----------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param(
            {"redirect": "all"},
            spawnkit.ConfigError,
            "needs log_dir: pass log_dir=PATH",
            id="redirect-without-log_dir",
        ),
        pytest.param(
            {"tee": True},
            spawnkit.ConfigError,
            "needs log_dir: pass log_dir=PATH",
            id="tee-without-log_dir",
        ),
        pytest.param(
            {"log_dir": "LOGS", "redirect": "out", "tee": "err"},
            spawnkit.ConfigError,
            "stderr is not redirected (redirect='out'); redirect it too",
            id="tee-of-a-stream-not-redirected",
        ),
        pytest.param(
            {"log_dir": "LOGS", "redirect": "both"},
            spawnkit.ConfigError,
            "redirect must be one of 'out', 'err', 'all', 'none'",
            id="unknown-redirect",
        ),
        pytest.param(
            {"prefix": "[{rnk}] "},
            spawnkit.ConfigError,
            "the only field is {rank}",
            id="prefix-unknown-field",
        ),
        pytest.param(
            {"prefix": "[{rank] "},
            spawnkit.ConfigError,
            "double a brace to print it",
            id="prefix-bad-format",
        ),
        pytest.param(
            {"ranks": [2]},
            spawnkit.ConfigError,
            "names rank 2, but the job has ranks 0 to 1",
            id="rank-out-of-range",
        ),
        pytest.param(
            {"ranks": 0},
            spawnkit.InvalidArgumentError,
            "collection of ranks such as [0]",
            id="ranks-not-a-collection",
        ),
        pytest.param(
            {"env": ["A=1"]},
            spawnkit.InvalidArgumentError,
            "env must be a mapping of str to str",
            id="env-not-a-mapping",
        ),
        pytest.param(
            {"env": {"A": 1}},
            spawnkit.InvalidArgumentError,
            "env must map str to str",
            id="env-value-not-str",
        ),
        pytest.param(
            {"env": lambda rank: "A=1" if rank else {}},
            spawnkit.InvalidArgumentError,
            "env(1) must be a mapping",
            id="env-callable-not-a-mapping",
        ),
        pytest.param(
            {"args": lambda rank: rank},
            spawnkit.InvalidArgumentError,
            "args(0) must return a tuple or list of extra arguments for fn, not int 0; "
            "for one argument return (value,)",
            id="args-callable-not-a-tuple",
        ),
        pytest.param(
            {"timeout": -1},
            spawnkit.ConfigError,
            "timeout must be >= 0 seconds",
            id="negative-timeout",
        ),
        pytest.param(
            {"log_dirs": "LOGS"},
            spawnkit.UnknownOptionError,
            "did you mean 'log_dir'",
            id="misspelled-option",
        ),
        pytest.param(
            {"executable": sys.executable},
            spawnkit.UnknownOptionError,
            "'executable' is an option of backend",
            id="another-backends-option",
        ),
    ],
)
def test_bad_input_is_refused_before_any_process_starts(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {k: str(tmp_path / "logs") if v == "LOGS" else v for k, v in options.items()}
    options.setdefault("args", ())
    with pytest.raises(error) as info:
        spawnkit.spawn(lt.block, nprocs=2, backend="fork", **options)
    assert type(info.value) is error
    assert message in str(info.value)
    _refused_up_front(info.value)


def test_another_backends_option_names_that_backend() -> None:
    with pytest.raises(spawnkit.UnknownOptionError) as info:
        spawnkit.spawn(lt.block, backend="fork", interpreter_args=["-X", "dev"])
    assert "'subprocess'" in str(info.value)
    assert "pass backend=" in str(info.value)


def test_unknown_backend_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPAWNKIT_BACKEND", "no-such-backend")
    with pytest.raises(spawnkit.UnknownBackendError) as info:
        spawnkit.spawn(lt.block)
    assert "$SPAWNKIT_BACKEND='no-such-backend' names no installed backend" in str(info.value)
    assert "unset the environment variable SPAWNKIT_BACKEND" in str(info.value)
    _refused_up_front(info.value)


@pytest.mark.parametrize(
    "options",
    [{"log_dir": "LOGS"}, {"prefix": "[{rank}] "}, {"ranks": [0]}],
    ids=["log_dir", "prefix", "ranks"],
)
def test_a_remote_backend_refuses_output_options(tmp_path: Path, options: dict[str, Any]) -> None:
    if "relay" not in spawnkit.available_backends():
        pytest.skip("the relay fixture backend is not installed (pip install tests/remote_fixture)")
    options = {k: str(tmp_path / "logs") if v == "LOGS" else v for k, v in options.items()}
    with pytest.raises(spawnkit.ConfigError) as info:
        spawnkit.spawn(lt.block, nprocs=2, backend="relay", **options)
    assert "backend 'relay' runs its workers outside this machine's process tree" in str(info.value)
    assert "need a local backend such as 'forkserver'" in str(info.value)
    _refused_up_front(info.value)


def test_a_remote_backend_refusing_log_dir_creates_no_folder(tmp_path: Path) -> None:
    if "relay" not in spawnkit.available_backends():
        pytest.skip("the relay fixture backend is not installed (pip install tests/remote_fixture)")
    with pytest.raises(spawnkit.ConfigError):
        spawnkit.spawn(lt.block, nprocs=2, backend="relay", log_dir=tmp_path / "logs")
    assert not (tmp_path / "logs").exists()
