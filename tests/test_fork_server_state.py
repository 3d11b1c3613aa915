"""A ``forkserver`` rank is the job's child as of now: the process state it starts with is
the job's at the request (not the server's), SIGINT is a KeyboardInterrupt in it as on the
other backends, and the server ends with the program whatever its preload left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing._processes import wait_for_files, wait_gone

import _fork_server_state_targets as st

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
HERE = Path(__file__).resolve().parent
# A program below runs a few jobs: bounded far above what it takes on a loaded machine.
PROGRAM_TIMEOUT = 90.0
# How long a fork server may take to see its program gone (pidfd, end-of-file) and exit,
# on a loaded machine: it notices at once, so this is never waited out unless it hangs.
SERVER_GONE_TIMEOUT = 10.0


def _python(code: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(cwd)])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _jobs(tmp_path: Path, item: str, *changes: str) -> list[list[object]]:
    """Run :func:`st.program`: a job after each change; each job's ``[server, seen]``."""
    proc = _python(
        "import sys, _fork_server_state_targets as t; t.program(*sys.argv[1:])",
        item,
        str(tmp_path),
        *changes,
        cwd=tmp_path,
    )
    out, err = proc.communicate(timeout=PROGRAM_TIMEOUT)
    assert proc.returncode == 0, err
    runs: list[list[object]] = json.loads(out)
    return runs


def _one_server(runs: list[list[object]]) -> None:
    servers = {server for server, _ in runs if server is not None}
    assert len(servers) == 1, runs  # every job's rank came from the same server


# -- the job's process state, as of each job ------------------------------------------------


def test_a_rank_creates_files_with_the_jobs_umask_of_now(tmp_path: Path) -> None:
    runs = _jobs(tmp_path, "umask", "umask 022", "umask 077", "umask 022")
    _one_server(runs)
    assert [seen for _, seen in runs] == ["0o644", "0o600", "0o644"]


def test_a_rank_has_the_jobs_resource_limits_of_now(tmp_path: Path) -> None:
    runs = _jobs(tmp_path, "nofile", "nothing", "lower NOFILE")
    _one_server(runs)
    assert runs[0][1] != [300, 1000]
    assert runs[1][1] == [300, 1000]


@pytest.mark.parametrize(
    ("changes", "outcomes"),
    [
        (("nothing", "ignore SIGUSR1"), ["died of SIGUSR1", "survived"]),
        # The server started while the job ignored it: the job's default of now wins.
        (("ignore SIGUSR1", "default SIGUSR1", "nothing"), ["survived"] + ["died of SIGUSR1"] * 2),
    ],
    ids=["ignored-later", "restored-later"],
)
def test_a_rank_ignores_the_signals_the_job_ignores_now(
    tmp_path: Path, changes: tuple[str, ...], outcomes: list[str]
) -> None:
    runs = _jobs(tmp_path, "sigusr1", "nothing", *changes)
    _one_server(runs)
    assert [seen for _, seen in runs[1:]] == outcomes


def test_a_rank_has_pythons_sigint_handler_unless_the_job_ignores_sigint(tmp_path: Path) -> None:
    runs = _jobs(tmp_path, "sigint", "nothing", "ignore SIGINT", "handle SIGINT")
    _one_server(runs)
    assert [seen for _, seen in runs] == ["default_int_handler", "SIG_IGN", "default_int_handler"]


def test_a_rank_has_the_jobs_nice_value_of_now(tmp_path: Path) -> None:
    runs = _jobs(tmp_path, "nice", "nothing", "nice +5")
    _one_server(runs)
    first, then = (seen for _, seen in runs)
    assert isinstance(first, int)
    assert then == min(first + 5, 19)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two CPUs to choose from",
)
def test_a_rank_has_the_jobs_cpu_affinity_of_now(tmp_path: Path) -> None:
    runs = _jobs(tmp_path, "affinity", "nothing", "first CPU only")
    _one_server(runs)
    first, then = (seen for _, seen in runs)
    assert isinstance(first, list)
    assert len(first) >= 2
    assert then == [min(first)]


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no SCHED_BATCH here")
def test_a_rank_has_the_jobs_scheduling_policy_of_now(tmp_path: Path) -> None:
    runs = _jobs(tmp_path, "sched", "nothing", "SCHED_BATCH")
    _one_server(runs)
    assert [seen for _, seen in runs] == [os.SCHED_OTHER, os.SCHED_BATCH]


UNPRIVILEGED = """
import ctypes, resource

# Without CAP_SYS_RESOURCE (root too), then with a core size limit of 0 for good: the
# server cannot give its ranks the job's limit back.
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

libc = ctypes.CDLL(None, use_errno=True)
header, data = Header(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
data[0].effective &= ~(1 << 24)
data[0].permitted &= ~(1 << 24)
assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="capabilities are Linux's")
def test_a_state_the_rank_cannot_take_is_that_ranks_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0:
        pytest.skip("the core size limit is 0 here already: nothing to raise it back to")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "unprivileged.py").write_text(UNPRIVILEGED)
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(st.parent, nprocs=1, backend="forkserver", preload=["unprivileged"])
    error = info.value.exception
    assert isinstance(error, spawnkit.LaunchError)
    assert "rank 0 cannot take the job's RLIMIT_CORE" in str(error)
    assert "which has (0, 0)" in str(error)


# -- SIGINT in a rank ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["subprocess", "forkserver"])
def test_sigint_to_a_rank_is_a_keyboard_interrupt_that_runs_its_finally(
    tmp_path: Path, backend: str
) -> None:
    ctx = spawnkit.spawn(
        st.wait_for_interrupt, args=(str(tmp_path),), nprocs=1, join=False, backend=backend
    )
    try:
        wait_for_files(tmp_path / "waiting-0")
        os.kill(ctx.pids()[0], signal.SIGINT)
        with pytest.raises(spawnkit.ProcessRaisedException) as info:
            ctx.join(timeout=PROGRAM_TIMEOUT)
    finally:
        ctx.terminate(grace_period=5)
    assert isinstance(info.value.exception, KeyboardInterrupt)
    assert (tmp_path / "finally-0").exists()


# -- the server ends with its program ------------------------------------------------------

# As some libraries' pools do at import: a thread that never ends, and is not a daemon.
POOL = "import threading\nthreading.Thread(target=threading.Event().wait).start()\n"

PROGRAM = """
import atexit, os, sys

def report():
    # Registered before spawnkit's own at-exit work: runs after it.
    from spawnkit_backends import _fork_server
    codes = [s.process.returncode for s in _fork_server._every_server() if s.process]
    print(f"server exit codes {codes}", flush=True)

atexit.register(report)
import spawnkit, _fork_server_state_targets as t

(server,) = spawnkit.spawn(t.parent, nprocs=1, backend="forkserver", preload=["pool"])
print(server, flush=True)
if sys.argv[1] == "wait":
    sys.stdin.read()
"""


def test_a_server_with_a_preloaded_thread_ends_when_its_program_is_killed(
    tmp_path: Path,
) -> None:
    (tmp_path / "pool.py").write_text(POOL)
    proc = _python(PROGRAM, "wait", cwd=tmp_path)
    server = 0
    try:
        assert proc.stdout is not None
        server = int(proc.stdout.readline())
        proc.kill()
        proc.wait(timeout=PROGRAM_TIMEOUT)
        # Not this process's child: it is gone, or an orphan this (sub)reaper may reap.
        assert wait_gone([server], timeout=SERVER_GONE_TIMEOUT) == set()
    finally:
        proc.kill()
        if server and wait_gone([server], timeout=0):
            os.kill(server, signal.SIGKILL)  # a server that outlived the test's bound
            wait_gone([server], timeout=SERVER_GONE_TIMEOUT)
        proc.communicate(timeout=PROGRAM_TIMEOUT)  # the server held its stderr until now


def test_a_server_with_a_preloaded_thread_ends_by_itself_when_its_program_exits(
    tmp_path: Path,
) -> None:
    (tmp_path / "pool.py").write_text(POOL)
    proc = _python(PROGRAM, "exit", cwd=tmp_path)
    out, err = proc.communicate(timeout=PROGRAM_TIMEOUT)
    assert proc.returncode == 0, err
    server, codes = out.splitlines()
    # It ended when the program closed its socket, not killed once the program gave up
    # waiting for it (-9); and it is gone by the time the program is.
    assert codes == "server exit codes [0]", err
    assert wait_gone([int(server)], timeout=0) == set()
