"""Parent watches beyond the conformance kit: registration, lightness, platform specifics.

The backend x watch matrix itself (parent killed, before arming, spawn from a thread,
stubborn workers, foreground signals) is :class:`spawnkit.testing.ParentDeathTests`, run
by ``tests/test_behaviour.py`` through ``BackendSuite``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import spawnkit
from spawnkit._registry import plugins
from spawnkit._spec import WorkerSpec
from spawnkit.testing import _targets
from spawnkit.testing._death_harness import run_harness

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
kqueue_only = pytest.mark.skipif(
    sys.platform != "darwin" and "bsd" not in sys.platform, reason="kqueue: macOS and the BSDs"
)
windows_only = pytest.mark.skipif(sys.platform != "win32", reason="job objects: Windows only")

BUILTIN = {"jobobject", "kqueue", "none", "pidfd", "pipe", "poll", "prctl"}


def _spec(job_pid: int, parent_pid: int) -> WorkerSpec:
    return WorkerSpec(0, 1, job_pid, parent_pid, None, None, (0,), None, 0.1, {})


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- registration -----------------------------------------------------------------------


def test_every_builtin_watch_is_registered() -> None:
    assert set(plugins().watches) >= BUILTIN
    for name in BUILTIN:
        assert plugins().watches[name].distribution == "spawnkit"


def test_a_watch_that_cannot_run_here_says_why() -> None:
    expected_unavailable = {
        "linux": {"jobobject", "kqueue"},
        "darwin": {"jobobject", "pidfd", "prctl"},
        "win32": {"kqueue", "pidfd", "prctl", "pipe", "poll"},
    }.get(sys.platform)
    if expected_unavailable is None:
        pytest.skip(f"no expectation written down for {sys.platform}")
    unavailable = {n for n in BUILTIN if not plugins().watches[n].available}
    assert unavailable == expected_unavailable
    for name in unavailable:
        reason = plugins().watches[name].unavailable
        assert reason, name
        with pytest.raises(spawnkit.WatchUnavailableError, match=name):
            spawnkit.spawn(_targets.times, args=(1,), watch=name)


def test_auto_picks_the_best_watch_here() -> None:
    picked = plugins().watch("auto").name
    if sys.platform.startswith("linux"):
        assert picked == ("pidfd" if plugins().watches["pidfd"].available else "prctl")
    elif sys.platform == "darwin" or "bsd" in sys.platform:
        assert picked == "kqueue"
    elif sys.platform == "win32":
        assert picked == "jobobject"


# -- poll's interval --------------------------------------------------------------------


def test_poll_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from spawnkit._watches.poll import INTERVAL_ENV, checked_interval

    monkeypatch.setenv(INTERVAL_ENV, "0.02")
    assert checked_interval() == 0.02
    assert checked_interval(0.5) == 0.5


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_bad_poll_interval_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from spawnkit._watches.poll import INTERVAL_ENV

    monkeypatch.setenv(INTERVAL_ENV, value)
    with pytest.raises(spawnkit.ConfigError, match=INTERVAL_ENV):
        spawnkit.spawn(_targets.times, args=(1,), watch="poll")


@pytest.mark.skipif(sys.platform == "win32", reason="poll cannot run on Windows")
def test_poll_watch_runs_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAWNKIT_POLL_INTERVAL", "0.01")
    assert spawnkit.spawn(_targets.times, args=(3,), nprocs=2, watch="poll") == [0, 3]


# -- workers stay light -----------------------------------------------------------------


_CHILD_HALVES = {
    "jobobject": "JobObjectChild",
    "kqueue": "KqueueChild",
    "none": "NoWatch",
    "pidfd": "PidfdChild",
    "pipe": "PipeChild",
    "poll": "PollChild",
    "prctl": "PrctlChild",
}


@pytest.mark.parametrize("name", sorted(_CHILD_HALVES))
def test_child_half_imports_only_the_standard_library(name: str, tmp_path: Path) -> None:
    # What a worker pays to unpickle the watch in its spec: the module, nothing heavy.
    code = textwrap.dedent(
        f"""
        import json, sys
        before = set(sys.modules)
        from spawnkit._watches.{name} import {_CHILD_HALVES[name]}
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    # Every `-c` here runs in tmp_path: tox's working directory, the checkout's root, would
    # be on its sys.path and shadow the installed spawnkit with the source tree.
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    ours = {m for m in loaded if m.split(".")[0] == "spawnkit"}
    assert ours <= {
        "spawnkit",
        "spawnkit._spec",
        "spawnkit._signals",
        "spawnkit._signals.mask",
        "spawnkit._signals.threads",
        "spawnkit._watches",
        f"spawnkit._watches.{name}",
    }
    foreign = [m for m in set(loaded) - ours if m.split(".")[0] not in sys.stdlib_module_names]
    assert foreign == []
    # ctypes and threads only when the watch is armed, not to unpickle it.
    assert "ctypes" not in loaded
    assert "pluggy" not in loaded


def test_an_armed_worker_loads_no_plugin_machinery(tmp_path: Path) -> None:
    # From a `python -c` parent: a worker of a script parent re-imports the script (pytest's
    # own, when run as `pytest`), which would bring in what the script imports.
    code = textwrap.dedent(
        """
        import json, spawnkit
        from spawnkit.testing import _targets
        print(json.dumps({
            watch: spawnkit.spawn(_targets.loaded_modules, backend="spawn", watch=watch)[0]
            for watch in spawnkit.available_watches()
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert set(loaded) == set(spawnkit.available_watches())
    for watch, modules in loaded.items():
        heavy = {"pluggy", "spawnkit._registry", "spawnkit.hookspecs", "importlib.metadata"}
        assert heavy.isdisjoint(modules), (watch, heavy & set(modules))


# -- the pipe's lifeline ----------------------------------------------------------------


@linux
@pytest.mark.parametrize("backend", ["fork", "spawn", "forkserver"])
def test_lifeline_copied_into_a_fork_sibling_does_not_delay_detection(
    backend: str, tmp_path: Path
) -> None:
    # A second job forks after the first one's lifeline exists; its workers, which have no
    # watch and outlive the parent, would hold a copy of the write end if it leaked to
    # them, and the first job's workers would never see end-of-file.
    jobs = [
        {"backend": backend, "watch": "pipe", "nprocs": 2, "tag": "watched"},
        {"backend": "fork", "watch": "none", "nprocs": 2, "tag": "bystander"},
    ]
    result = run_harness(tmp_path, jobs, survive=["bystander"])
    assert result["error"] is None, result
    bystanders = sorted(e["pid"] for e in result["events"] if e.get("tag") == "bystander")
    assert result["alive"] == bystanders, result
    assert result["remaining"] == [], result


@linux
@pytest.mark.parametrize("watch", ["poll", "pidfd"])
def test_the_fork_server_and_its_ranks_end_when_the_job_is_killed(
    watch: str, tmp_path: Path
) -> None:
    # The ranks' direct parent is the server: with a watch that follows the direct parent
    # (poll), they end only because the server ends with the job.
    from spawnkit.testing._processes import wait_gone

    script = tmp_path / "killed_job.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys, spawnkit
            from spawnkit.testing import _targets as t
            from spawnkit_backends._fork_server import server_pids

            if __name__ == "__main__":
                ctx = spawnkit.spawn(
                    t.block, nprocs=2, join=False, backend="forkserver", watch=sys.argv[1]
                )
                print(*server_pids(), *ctx.pids(), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script), watch],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 3, proc.stdout
    assert wait_gone(pids, timeout=30) == set()


# -- the death signal -------------------------------------------------------------------


@linux
def test_prctl_death_signal_is_a_realtime_signal_nobody_else_uses() -> None:
    import signal

    from spawnkit._watches.prctl import death_signal

    assert signal.SIGRTMIN <= death_signal() <= signal.SIGRTMAX


# -- kqueue (macOS, BSD) ----------------------------------------------------------------


def _shutdown_calls() -> tuple[list[str], Callable[[], None]]:
    calls: list[str] = []
    return calls, lambda: calls.append("shutdown")


def _wait_for(calls: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not calls and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.mark.darwin
@kqueue_only
def test_kqueue_arm_on_a_dead_job_shuts_down_at_once() -> None:
    from spawnkit._watches.kqueue import KqueueChild

    calls, shutdown = _shutdown_calls()
    KqueueChild().arm((), _spec(_dead_pid(), os.getppid()), shutdown)
    assert calls == ["shutdown"]


@pytest.mark.darwin
@kqueue_only
def test_kqueue_sees_the_job_exit() -> None:
    from spawnkit._watches.kqueue import KqueueChild

    job = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    calls, shutdown = _shutdown_calls()
    try:
        KqueueChild().arm((), _spec(job.pid, os.getppid()), shutdown)
        assert calls == []
    finally:
        assert job.stdin is not None
        job.stdin.close()
        job.wait()
    _wait_for(calls)
    assert calls == ["shutdown"]


# -- job objects (Windows) --------------------------------------------------------------


@pytest.mark.windows
@windows_only
def test_jobobject_arm_after_the_job_closed_shuts_down_at_once() -> None:
    from spawnkit._watches.jobobject import JobObjectChild, JobObjectParent

    parent = JobObjectParent()
    child = parent.child_watch()
    parent.close()  # the name goes with the last handle, as when the job's process dies
    calls, shutdown = _shutdown_calls()
    JobObjectChild(child.job_name).arm((), _spec(os.getpid(), os.getpid()), shutdown)
    assert calls == ["shutdown"]


_WINDOWS_PARENT = textwrap.dedent(
    """
    import sys, time, spawnkit
    from spawnkit.testing import _targets

    if __name__ == "__main__":
        ctx = spawnkit.spawn(_targets.block, nprocs=2, join=False, watch="jobobject")
        print(*ctx.pids(), flush=True)
        time.sleep(600)
    """
)


def _windows_wait_exit(pid: int, timeout: float) -> bool:
    """``True`` once ``pid`` has exited (or never existed), waiting up to ``timeout``."""
    import ctypes

    synchronize, wait_object_0 = 0x00100000, 0
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return True
    try:
        return bool(kernel32.WaitForSingleObject(handle, int(timeout * 1000)) == wait_object_0)
    finally:
        kernel32.CloseHandle(handle)


@pytest.mark.windows
@windows_only
def test_killing_the_job_ends_its_workers(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_WINDOWS_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    try:
        assert len(pids) == 2
        parent.kill()  # TerminateProcess: no cleanup in the parent at all
        parent.wait()
        assert all(_windows_wait_exit(pid, 10.0) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
        for pid in pids:
            if not _windows_wait_exit(pid, 0):
                os.kill(pid, 9)  # TerminateProcess on Windows
