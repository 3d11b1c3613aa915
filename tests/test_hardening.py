"""Core promises under attack, where one backend stands for all: stray writes, a dead fork
server, ignored SIGCHLD, a user's exception during launch, a foreign fork of the parent."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import spawnkit
from spawnkit.testing import _death_targets as d
from spawnkit.testing import _targets as t
from spawnkit.testing import wait_for_files
from spawnkit.testing._processes import descendants, kill_all, wait_gone

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors and signals")


def _script(tmp_path: Path, code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script; output goes to files, since a process it leaves behind
    (on purpose, in some tests) would keep a pipe open."""
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(code))
    out, err = tmp_path / "job.out", tmp_path / "job.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.run(
            [sys.executable, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            cwd=tmp_path,
            check=False,
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())


# -- no stray writes -----------------------------------------------------------------------


def test_terminate_after_the_job_was_released_writes_nothing(tmp_path: Path) -> None:
    with spawnkit.spawn(t.times, args=(2,), nprocs=2, join=False, backend="fork") as ctx:
        assert ctx.results() == [0, 2]
    # The job's descriptors are closed: the program's next files get their numbers (enough
    # files to take every number freed, whichever the job had).
    files = [open(tmp_path / f"{i}", "wb") for i in range(128)]  # noqa: SIM115
    try:
        ctx.terminate()
        ctx.wake()
    finally:
        for f in files:
            f.close()
    assert all((tmp_path / f"{i}").read_bytes() == b"" for i in range(128))


# -- a fork server that dies mid-job -----------------------------------------------------


def _kill_fork_server() -> int:
    from spawnkit_backends._fork_server import server_pids

    (server,) = server_pids()
    os.kill(server, signal.SIGKILL)
    return server


@posix
def test_results_that_arrived_survive_the_fork_servers_death(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        d.check_in_and_wait, args=(str(tmp_path),), nprocs=2, join=False, backend="forkserver"
    )
    try:
        wait_for_files(tmp_path / "started-0", tmp_path / "started-1")
        _kill_fork_server()
        (tmp_path / "go").touch()  # both return normally now, after their server died
        assert ctx.results() == [0, 1]
    finally:
        ctx.terminate(grace_period=5)


@posix
def test_a_rank_whose_outcome_died_with_the_fork_server_names_it(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(t.block, nprocs=1, join=False, backend="forkserver")
    try:
        (pid,) = ctx.pids()
        server = _kill_fork_server()
        assert ctx.join(timeout=0.2) is False  # the rank still runs: not "ended with 255"
        os.kill(pid, signal.SIGKILL)  # it dies without a word: its outcome is unknowable
        with pytest.raises(spawnkit.ProcessExitedException) as info:
            ctx.join(timeout=30)
        assert f"the fork server (pid {server})" in str(info.value)
        assert "died" in str(info.value)
    finally:
        ctx.terminate(grace_period=5)


# -- the parent's signal dispositions ----------------------------------------------------


@posix
def test_an_ignored_sigchld_is_refused_before_anything_starts() -> None:
    before = set(descendants())
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with pytest.raises(spawnkit.ConfigError) as info:
            spawnkit.spawn(t.times, args=(1,), nprocs=2, backend="fork")
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert "SIGCHLD" in str(info.value)
    assert "signal.signal(signal.SIGCHLD, signal.SIG_DFL)" in str(info.value)
    assert set(descendants()) == before


# -- a launch interrupted by the program's own exception ---------------------------------


class UsersError(Exception):
    pass


class UsersInterrupt(KeyboardInterrupt):
    pass


def _backend_raising_at_rank_1(monkeypatch: pytest.MonkeyPatch, raising: Any) -> str:
    """A copy of 'fork' whose start() for rank 1 runs ``raising()`` first."""
    from spawnkit._registry import plugins

    registry = plugins()
    fork = registry.backend("fork")

    class Starter:
        def __init__(self) -> None:
            self.inner = fork.factory()

        def start(
            self, spec: spawnkit.WorkerSpec, notify: Callable[[], None]
        ) -> spawnkit.WorkerHandle:
            if spec.rank == 1:
                raising()
            return self.inner.start(spec, notify)

        def close(self) -> None:
            self.inner.close()

    monkeypatch.setitem(
        registry.backends,
        "fork-raising",
        dataclasses.replace(fork, name="fork-raising", factory=Starter),
    )
    return "fork-raising"


@posix
@pytest.mark.parametrize("error", [UsersError, UsersInterrupt])
def test_the_programs_own_exception_during_launch_comes_out_unchanged(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    def handler(signum: int, frame: object) -> None:
        raise error("from the program's signal handler")

    def signal_self() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(1000):  # the handler runs, and raises, between two of these
            pass

    backend = _backend_raising_at_rank_1(monkeypatch, signal_self)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(error, match="from the program's signal handler"):
            spawnkit.spawn(t.block, nprocs=3, backend=backend)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # Rank 0 had started: it was stopped, not leaked (the leak guard checks the rest).


@posix
def test_a_start_that_fails_is_a_launch_error_naming_the_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail() -> None:
        raise OSError(24, "Too many open files")

    backend = _backend_raising_at_rank_1(monkeypatch, fail)
    with pytest.raises(spawnkit.LaunchError) as info:
        spawnkit.spawn(t.block, nprocs=3, backend=backend)
    assert str(info.value).startswith(  # then what to do about it (test_core_hardening)
        "backend 'fork-raising' could not start rank 1 of 3: "
        "OSError: [Errno 24] Too many open files. "
    )


# -- the lifeline and a fork of the parent that is not a worker --------------------------


@posix
@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_the_pipe_watch_survives_a_fork_of_the_parent(tmp_path: Path, how: str) -> None:
    fork_child = (
        "pid = os.fork()\n"
        "            if pid == 0:\n"
        "                signal.pause()\n"
        "                os._exit(0)"
        if how == "os.fork"
        else "p = multiprocessing.get_context('fork').Process(target=signal.pause)\n"
        "            p.start()\n"
        "            pid = p.pid"
    )
    proc = _script(
        tmp_path,
        f"""
        import multiprocessing, os, signal, spawnkit
        from spawnkit.testing import _targets as t
        if __name__ == "__main__":
            ctx = spawnkit.spawn(t.block, nprocs=2, join=False, backend="spawn", watch="pipe")
            {fork_child}
            print(*ctx.pids(), pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    *workers, stranger = [int(p) for p in proc.stdout.split()]
    try:
        # The program's own child holds no copy of the lifeline's write end.
        assert wait_gone(workers, timeout=15) == set()
    finally:
        kill_all([*workers, stranger])


# -- no pidfds: waiting must not depend on a descriptor a grandchild holds ---------------


@posix
@pytest.mark.parametrize("backend", ["fork", "spawn"])
def test_without_pidfds_a_grandchild_does_not_hold_up_join(tmp_path: Path, backend: str) -> None:
    proc = _script(
        tmp_path,
        f"""
        import os
        if hasattr(os, "pidfd_open"):
            del os.pidfd_open  # as on macOS, the BSDs and Linux before 5.3
        import spawnkit
        from spawnkit.testing import _targets as t
        if __name__ == "__main__":
            print(spawnkit.spawn(t.leave_grandchild_and_return, args=({str(tmp_path)!r}, False),
                                 nprocs=2, backend={backend!r}, watch="pipe", grace_period=60))
        """,
        timeout=45,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1]"


# -- every wait bounded ------------------------------------------------------------------


@posix
def test_a_worker_that_survives_sigkill_is_given_up_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A process stuck in the kernel ignores even SIGKILL: the stop must still end."""
    from spawnkit import _context
    from spawnkit._registry import plugins

    registry = plugins()
    fork = registry.backend("fork")

    class Unkillable:
        """Wraps a real rank's handle, but its process never seems to end."""

        def __init__(self, inner: spawnkit.WorkerHandle) -> None:
            self.inner = inner
            self.never_r, self.never_w = os.pipe()

        @property
        def pid(self) -> int | None:
            return self.inner.pid

        def wait_fds(self) -> tuple[int, ...]:
            return (self.never_r,)

        def poll(self) -> None:
            self.inner.poll()  # reaps the real one once it is gone
            return

        def stop(self, force: bool = False) -> None:
            self.inner.stop(force)

        def close(self) -> None:
            self.inner.close()
            os.close(self.never_r)
            os.close(self.never_w)

    class Starter:
        def __init__(self) -> None:
            self.inner = fork.factory()

        def start(
            self, spec: spawnkit.WorkerSpec, notify: Callable[[], None]
        ) -> spawnkit.WorkerHandle:
            return Unkillable(self.inner.start(spec, notify))

        def close(self) -> None:
            self.inner.close()

    monkeypatch.setitem(
        registry.backends,
        "unkillable",
        dataclasses.replace(fork, name="unkillable", factory=Starter),
    )
    monkeypatch.setattr(_context, "KILL_WAIT", 0.5)
    ctx = spawnkit.spawn(t.block, nprocs=1, join=False, backend="unkillable")
    (pid,) = ctx.pids()
    ctx.terminate(grace_period=0.2)  # returns: SIGTERM, 0.2 s, SIGKILL, 0.5 s, given up
    with pytest.raises(spawnkit.JobTerminatedError):
        ctx.join(timeout=5)
    assert any("survived a forced stop" in r.getMessage() for r in caplog.records)
    assert wait_gone([pid], timeout=10) == set()  # the real process did die


@posix
@pytest.mark.parametrize("backend", ["fork", "spawn", "subprocess"])
def test_a_worker_reaped_by_the_programs_own_wait_is_a_failure_not_a_hang(backend: str) -> None:
    ctx = spawnkit.spawn(t.exit_with, args=(3, "os._exit"), nprocs=1, join=False, backend=backend)
    (pid,) = ctx.pids()
    os.waitpid(pid, 0)  # the program's own wait takes the status first
    with pytest.raises(spawnkit.ProcessExitedException, match="collected by other code"):
        ctx.join(timeout=30)


@posix
# The fork from a thread beside the main one is the point: Python 3.12+ warns of it (3.15
# before the fork, so filterwarnings = error would stop it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_worker_started_while_another_job_waits_in_the_foreground(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The foreground's own signal handlers are the waiting parent's: a fork worker that a
    thread starts meanwhile gets the program's, and stops on SIGTERM as usual."""
    import threading

    caplog.set_level(logging.WARNING, logger="spawnkit")
    outcome: list[object] = []

    def second_job() -> None:
        try:
            wait_for_files(tmp_path / "started-0")  # the main thread waits in spawn() now
            ctx = spawnkit.spawn(
                t.cleanup_on_exit, args=(str(tmp_path / "fork"),), join=False, backend="fork"
            )
            wait_for_files(tmp_path / "fork" / "0.ready")
            ctx.terminate(grace_period=30)
            outcome.append((tmp_path / "fork" / "0.cleaned").exists())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            (tmp_path / "go").touch()

    (tmp_path / "fork").mkdir()
    thread = threading.Thread(target=second_job)
    thread.start()
    try:
        assert spawnkit.spawn(d.check_in_and_wait, args=(str(tmp_path),), backend="spawn") == [0]
    finally:
        thread.join(timeout=60)
    assert outcome == [True]
    assert not [r for r in caplog.records if "SIGKILL" in r.getMessage()]


@posix
@pytest.mark.parametrize("backend", ["fork", "subprocess"])
def test_closed_descriptors_under_the_common_1024_limit(tmp_path: Path, backend: str) -> None:
    """With a soft limit of 1024, user code that closes 0-1023 still gets nothing of
    spawnkit's written into its files (the signal wakeup pipe sits above it)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1100:
        pytest.skip(f"the hard descriptor limit is {hard}: nothing is out of reach")
    log = tmp_path / "user.log"
    log.touch()
    proc = _script(
        tmp_path,
        f"""
        import resource, spawnkit
        from spawnkit.testing import _targets as t
        if __name__ == "__main__":
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, {hard}))
            try:
                spawnkit.spawn(t.close_fds_and_return, args=({str(log)!r},), nprocs=2,
                               backend={backend!r})
            except spawnkit.ProcessExitedException as exc:
                print(exc.exit_code)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "85"
    assert sorted(log.read_bytes().splitlines()) in (
        [b"rank 0 wrote this"],
        [b"rank 1 wrote this"],
        [b"rank 0 wrote this", b"rank 1 wrote this"],
    ), log.read_bytes()


@posix
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["fork", "subprocess"])
def test_a_sigterm_that_lands_in_a_destructor_still_stops_the_rank(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Python drops what __del__ raises; the Terminated is raised again in the main code."""
    caplog.set_level(logging.WARNING, logger="spawnkit")
    ctx = spawnkit.spawn(
        t.stopped_inside_del, args=(str(tmp_path),), nprocs=2, join=False, backend=backend
    )
    wait_for_files(tmp_path / "0.in_del", tmp_path / "1.in_del")
    ctx.terminate(grace_period=30)
    forced = [r.getMessage() for r in caplog.records if "SIGKILL" in r.getMessage()]
    assert forced == []
    assert [p.exitcode for p in ctx.processes] == [-signal.SIGTERM, -signal.SIGTERM]


def _signalled_in_unraisable_hook(
    tmp_path: Path, backend: str, own_hook: bool
) -> spawnkit.ProcessExitedException:
    """Start one rank that runs an unraisable hook (its own, or the one it inherited), send
    it SIGTERM while the hook waits, and return the failure its end brings."""
    hook = sys.unraisablehook
    if not own_hook:
        sys.unraisablehook = t.waiting_unraisable_hook(str(tmp_path))
    try:
        ctx = spawnkit.spawn(
            t.signalled_in_unraisable_hook,
            args=(str(tmp_path), own_hook),
            nprocs=1,
            join=False,
            backend=backend,
        )
    finally:
        sys.unraisablehook = hook
    with ctx:
        wait_for_files(tmp_path / "in_hook")
        os.kill(ctx.pids()[0], signal.SIGTERM)
        (tmp_path / "sent").touch()
        with pytest.raises(spawnkit.ProcessExitedException) as info:
            assert ctx.join(timeout=60), "the rank slept on after its SIGTERM"
    return info.value


@posix
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("backend", "own_hook"),
    [("fork", False), ("fork", True), ("forkserver", True), ("subprocess", True)],
    ids=["fork-inherited-hook", "fork-own-hook", "forkserver-own-hook", "subprocess-own-hook"],
)
def test_a_sigterm_that_lands_in_an_unraisable_hook_still_stops_the_rank(
    backend: str, own_hook: bool, tmp_path: Path
) -> None:
    """Python drops what an unraisable hook raises; the Terminated waits until it returns.

    The inherited hook is pytest's case: a fork rank runs the parent's hook for an error
    in a destructor, through spawnkit's own.
    """
    failure = _signalled_in_unraisable_hook(tmp_path, backend, own_hook)
    assert failure.signal_name == "SIGTERM"


def _exit_7(signum: int, frame: object) -> None:
    raise SystemExit(7)


@posix
@pytest.mark.timeout(120)
def test_an_inherited_sigterm_handler_waits_until_the_unraisable_hook_returns(
    tmp_path: Path,
) -> None:
    """A fork rank keeps its parent's own SIGTERM handler; what that raises in a hook is lost
    as well, so it too runs once the hook has returned."""
    previous = signal.signal(signal.SIGTERM, _exit_7)
    try:
        failure = _signalled_in_unraisable_hook(tmp_path, "fork", own_hook=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert failure.exit_code == 7
