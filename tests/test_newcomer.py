"""What a new user meets first: catching a rank's error, its log, the messages of the
first mistakes (no main guard, a program on standard input, a fork context's queue)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spawnkit

import _newcomer_targets as t

TESTS = Path(__file__).resolve().parent
LOCAL_BACKENDS = ["spawn", "fork", "forkserver", "subprocess"]
posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX backends")


def _run(
    tmp_path: Path, args: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a program of the test in ``tmp_path`` that can import the targets module."""
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )


# -- the rank's own exception ------------------------------------------------------------


@posix
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_the_ranks_own_exception_is_the_errors_exception_attribute(backend: str) -> None:
    # The README's way to get at the rank's error: spawnkit's exception is no ValueError.
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(t.raise_value_error, nprocs=1, backend=backend)
    error = info.value
    assert not isinstance(error, ValueError)
    assert isinstance(error.exception, ValueError)
    assert str(error.exception) == "rank 0 is unhappy"
    assert error.__cause__ is error.exception
    assert isinstance(error.exception.__cause__, spawnkit.RemoteTraceback)
    assert error.remote_traceback.rstrip().endswith("ValueError: rank 0 is unhappy")


# -- the failing rank's log holds its traceback ------------------------------------------


@posix
@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
@pytest.mark.parametrize(
    ("redirect", "tee", "prefix"),
    [
        ("all", False, None),
        ("err", False, None),
        ("all", "err", None),
        ("all", "all", "<{rank}> "),
        ("all", "out", None),
        ("err", False, "<{rank}> "),
    ],
)
def test_a_failed_ranks_stderr_log_ends_with_its_traceback(
    tmp_path: Path, backend: str, redirect: str, tee: object, prefix: str | None
) -> None:
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(
            t.fail_after_output,
            nprocs=2,
            backend=backend,
            log_dir=tmp_path,
            redirect=redirect,
            tee=tee,
            prefix=prefix,
            grace_period=30,
        )
    log = (tmp_path / "1" / "stderr.log").read_text()
    # What the rank wrote, then the traceback the parent raised with: once.
    assert log == "rank 1 says hello\n" + info.value.remote_traceback, log
    assert log.count("Traceback (most recent call last)") == 1
    assert log.rstrip().endswith("RuntimeError: loss is nan")
    # A rank that did not raise has no traceback in its log.
    assert "Traceback" not in (tmp_path / "0" / "stderr.log").read_text()


@posix
def test_the_cli_points_at_a_log_that_holds_the_root_causes_traceback(tmp_path: Path) -> None:
    examples = TESTS.parent / "examples"
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "unlucky.py").write_text((examples / "unlucky.py").read_text())
    proc = _run(
        tmp_path,
        [
            "-m",
            "spawnkit",
            "run",
            "-n",
            "3",
            "--log-dir",
            "logs",
            "--tee",
            "out",
            "--json",
            "summary.json",
            "examples.unlucky:train",
        ],
    )
    assert proc.returncode == 1, proc.stderr
    log = (tmp_path / "logs" / "2" / "stderr.log").read_text()
    assert log.startswith("Traceback (most recent call last):\n"), log
    assert log.rstrip().endswith("RuntimeError: loss is nan")
    assert log.count("Traceback") == 1
    # The console still shows the traceback once: the log got it from the parent, not
    # through the rank's stderr.
    assert proc.stderr.count("Traceback (most recent call last)") == 1, proc.stderr
    assert str(tmp_path / "logs" / "2" / "stderr.log") in proc.stderr


# -- a program read from standard input ----------------------------------------------------


@posix
def test_the_spawn_backend_refuses_a_program_on_stdin_naming_the_backends_that_can(
    tmp_path: Path,
) -> None:
    program = textwrap.dedent(
        """
        import spawnkit
        import _newcomer_targets as t

        try:
            spawnkit.spawn(t.rank_number, nprocs=1, backend="spawn")
        except spawnkit.ConfigError as exc:
            print(exc)
        print(spawnkit.spawn(t.rank_number, nprocs=2, backend="forkserver"))
        """
    )
    proc = _run(tmp_path, ["-"], stdin=program)
    assert proc.returncode == 0, proc.stderr
    told, results = proc.stdout.splitlines()
    assert results == "[0, 1]"  # the README's way out works
    assert "read from standard input" in told
    able = told.split("use a backend that does not: ")[1]
    names = [name.strip("'") for name in able.split(", ")]
    assert {"fork", "forkserver", "subprocess"} <= set(names), told
    assert "spawn" not in names


# -- a fork context's queue ----------------------------------------------------------------


@posix
def test_a_fork_context_queue_for_spawn_names_its_type_and_both_fixes() -> None:
    import multiprocessing

    queue = multiprocessing.get_context("fork").Queue()
    try:
        with pytest.raises(spawnkit.NotPicklableError) as info:
            spawnkit.spawn(t.put_rank, args=(queue,), nprocs=1, backend="spawn")
    finally:
        queue.close()
        queue.join_thread()
    told = str(info.value)
    assert "args[0] <multiprocessing.queues.Queue object" in told
    assert ".." not in told, told
    assert 'multiprocessing.get_context("spawn")' in told
    assert "'fork'" in told


@posix
def test_a_spawn_context_queue_works_with_the_spawn_backend() -> None:
    import multiprocessing

    queue = multiprocessing.get_context("spawn").Queue()
    try:
        spawnkit.spawn(t.put_rank, args=(queue,), nprocs=2, backend="spawn")
        assert sorted(queue.get(timeout=30) for _ in range(2)) == [0, 1]
    finally:
        queue.close()
        queue.join_thread()


# -- a script without its main guard ------------------------------------------------------

_UNGUARDED = """
import sys

import spawnkit


def rank_number(rank):
    return rank


try:
    spawnkit.spawn(rank_number, nprocs=2, backend=sys.argv[1])
except spawnkit.ConfigError as exc:
    if __name__ == "__main__":
        print(f"{type(exc).__name__}: {exc}", flush=True)
    raise
"""

GUARD = 'Put the code that starts the job under `if __name__ == "__main__":`'


@posix
@pytest.mark.parametrize("backend", ["spawn", "subprocess", "forkserver"])
def test_a_script_without_its_main_guard_is_told_once_in_the_parent(
    tmp_path: Path, backend: str
) -> None:
    (tmp_path / "unguarded.py").write_text(_UNGUARDED)
    proc = _run(tmp_path, ["unguarded.py", backend])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # The parent's exception names the guard and the script.
    assert proc.stdout.startswith("ConfigError: "), proc.stdout + proc.stderr
    assert GUARD in proc.stdout
    assert str(tmp_path / "unguarded.py") in proc.stdout
    # The program's whole stderr: the parent's traceback, which says it once; no worker
    # adds its own copy.
    assert proc.stderr.count(GUARD) == 1, proc.stderr
    assert proc.stderr.count("spawnkit.spawn() was called while") == 1, proc.stderr
