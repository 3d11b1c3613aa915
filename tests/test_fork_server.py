"""What only the ``forkserver`` backend does: its server, preload, the preloaded ``__main__``.

The shared behaviour (results, errors, signals, parent death) is tests/test_behaviour.py's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing._processes import descendants, wait_gone

import _fork_server_targets as ft

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
BACKEND = "forkserver"


def _servers() -> list[int]:
    from spawnkit_backends._fork_server import server_pids

    return server_pids()


def _probe_module(folder: Path, log: Path) -> str:
    """A module that notes each process that imports it, in ``log``."""
    name = f"probe_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(
        f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    )
    return name


def _imported_by(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


# -- preload ------------------------------------------------------------------------------


def test_preloaded_module_is_imported_once_in_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "imports.log"
    name = _probe_module(tmp_path, log)
    results = spawnkit.spawn(ft.loaded, args=(name,), nprocs=3, backend=BACKEND, preload=[name])
    assert [seen for seen, _ in results] == [True, True, True]
    (server,) = {ppid for _, ppid in results}
    assert _imported_by(log) == [server]  # once, in the server; no rank imported it again
    # The next job with the same preload reuses the warm server.
    again = spawnkit.spawn(
        ft.import_module, args=(name,), nprocs=2, backend=BACKEND, preload=[name]
    )
    assert again == [server, server]
    assert _imported_by(log) == [server]


def test_without_preload_each_rank_imports_for_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "imports.log"
    name = _probe_module(tmp_path, log)
    assert spawnkit.spawn(ft.loaded, args=(name,), nprocs=2, backend=BACKEND)[0][0] is False
    spawnkit.spawn(ft.import_module, args=(name,), nprocs=2, backend=BACKEND)
    assert len(set(_imported_by(log))) == 2


def test_a_new_preload_list_starts_a_new_server_and_retires_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    first = spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0]
    second = spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND, preload=["json"])[0]
    assert first != second
    # The old server had no rank left: it is gone, and reaped.
    assert wait_gone([first], timeout=10) == set()
    assert _servers() == [second]


def test_a_changed_environment_starts_a_new_server(monkeypatch: pytest.MonkeyPatch) -> None:
    first = spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0]
    assert spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0] == first
    monkeypatch.setenv("SPAWNKIT_TEST_SETTING", uuid.uuid4().hex)
    second = spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0]
    assert second != first
    assert wait_gone([first], timeout=10) == set()


def test_a_retired_server_ends_only_with_its_last_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = tmp_path / "go"
    ctx = spawnkit.spawn(ft.wait_for, args=(str(go),), nprocs=2, join=False, backend=BACKEND)
    try:
        (old,) = _servers()
        monkeypatch.setenv("SPAWNKIT_TEST_SETTING", uuid.uuid4().hex)
        new = spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0]
        assert new != old
        assert old in descendants()  # still serving the first job's ranks
        go.touch()
        assert ctx.results() == [old, old]
    finally:
        ctx.terminate(grace_period=5)
    assert wait_gone([old], timeout=10) == set()


def test_a_killed_server_is_replaced_by_the_next_job() -> None:
    import signal

    first = spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0]
    os.kill(first, signal.SIGKILL)
    assert spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND)[0] not in (first, os.getpid())
    assert wait_gone([first], timeout=10) == set()


@pytest.mark.parametrize(
    ("preload", "error", "words"),
    [
        ("json", spawnkit.InvalidArgumentError, "must be a list of module names"),
        ([3], spawnkit.InvalidArgumentError, "must be module names (str), not int 3"),
        (["json sys"], spawnkit.ConfigError, "is not a module name"),
        (["no_such_module_here.sub"], spawnkit.ConfigError, "no module 'no_such_module_here'"),
    ],
)
def test_bad_preload_is_refused_before_any_process_starts(
    preload: object, error: type[Exception], words: str
) -> None:
    before = set(descendants())
    with pytest.raises(error, match="backend 'forkserver'") as info:
        spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND, preload=preload)
    assert words in str(info.value)
    assert set(descendants()) <= before


def test_a_preload_that_fails_to_import_names_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_preload.py").write_text("raise RuntimeError('broken at import')\n")
    before = set(descendants())
    with pytest.raises(spawnkit.LaunchError) as info:
        spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND, preload=["broken_preload"])
    message = str(info.value)
    assert "RuntimeError: broken at import" in message
    assert "leave the module out of preload" in message
    assert 'broken_preload.py", line 1' in message  # the server's traceback
    assert set(descendants()) <= before  # the failed server is gone and reaped


def test_a_server_that_exits_while_it_loads_is_a_plain_launch_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "exiting_preload.py").write_text("import os\nos._exit(3)\n")
    before = set(descendants())
    with pytest.raises(spawnkit.LaunchError) as info:
        spawnkit.spawn(ft.parent, nprocs=1, backend=BACKEND, preload=["exiting_preload"])
    assert type(info.value) is spawnkit.LaunchError  # no class of the backend's own
    assert "exited before it could get ready (exit status 3" in str(info.value)
    assert set(descendants()) <= before


def _run_program(
    script: Path, *args: str, flags: tuple[str, ...] | list[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as a program in its own folder (bounded), its output captured."""
    return subprocess.run(
        [sys.executable, *flags, str(script), *args],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def proc_pid(runs: list[str]) -> str:
    """The job's pid, from the line its own run of the script wrote."""
    (pid,) = [line.split()[1] for line in runs if line.startswith("__main__ ")]
    return pid


# -- the job's __main__, its directory and its streams -------------------------------------

SCRIPT = """
import os, sys, spawnkit

with open(sys.argv[1], "a") as log:
    log.write(f"{__name__} {os.getpid()}\\n")

def work(rank):
    # One write: print() writes the newline apart, and under PYTHONUNBUFFERED the
    # ranks' halves would interleave.
    sys.stdout.write(f"rank {rank} in {os.getcwd()}\\n")
    sys.stdout.flush()
    return os.getppid()

if __name__ == "__main__":
    first = spawnkit.spawn(work, nprocs=3, backend="forkserver")
    os.chdir(sys.argv[2])
    out = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT)
    os.dup2(out, 1)
    second = spawnkit.spawn(work, nprocs=3, backend="forkserver")
    with open(sys.argv[1], "a") as log:
        log.write(f"servers {' '.join(map(str, sorted({*first, *second})))}\\n")
"""


def test_main_is_imported_once_in_the_server_and_ranks_follow_the_jobs_cwd_and_stdout(
    tmp_path: Path,
) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    log, elsewhere, out = tmp_path / "log", tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    proc = _run_program(script, str(log), str(elsewhere), str(out))
    assert proc.returncode == 0, proc.stderr
    *runs, last = log.read_text().splitlines()
    server = int(last.split()[1])
    assert last == f"servers {server}"  # one server for both jobs
    # The script ran in the job (as __main__) and once more, in the server (as
    # __mp_main__, its guarded block skipped): not once per rank.
    assert sorted(runs) == [f"__main__ {proc_pid(runs)}", f"__mp_main__ {server}"]
    # Each job's ranks wrote to the job's stdout and sat in its cwd of that moment.
    assert sorted(proc.stdout.splitlines()) == [f"rank {r} in {tmp_path}" for r in range(3)]
    assert sorted(out.read_text().splitlines()) == [f"rank {r} in {elsewhere}" for r in range(3)]


THREADED = """
import os, sys, threading, spawnkit

def forks_with_a_thread(rank):
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return rank

if __name__ == "__main__":
    print(spawnkit.spawn(forks_with_a_thread, nprocs=2, backend="forkserver", preload=["busy"]))
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python 3.12 added the fork warning")
def test_the_servers_threads_bring_no_fork_warning_but_a_ranks_own_do(tmp_path: Path) -> None:
    # A preloaded module that runs a thread, as a BLAS pool does: the server's forks are not
    # the job's concern; a rank that forks with a thread of its own is warned as usual.
    (tmp_path / "busy.py").write_text(
        "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\n"
    )
    script = tmp_path / "threaded.py"
    script.write_text(textwrap.dedent(THREADED))
    proc = _run_program(script, flags=["-W", "default::DeprecationWarning"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1]"
    warned = [line for line in proc.stderr.splitlines() if "multi-threaded" in line]
    assert len(warned) == 2, proc.stderr  # one per rank, none from the server
    assert all("threaded.py" in line for line in warned), proc.stderr


def test_function_defined_under_the_main_guard_gives_an_error_that_says_why(
    tmp_path: Path,
) -> None:
    # The server imported the script ahead of the ranks, its guarded block not run.
    script = tmp_path / "guarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import spawnkit

            if __name__ == "__main__":
                def work(rank):
                    return rank

                try:
                    spawnkit.spawn(work, backend="forkserver")
                except spawnkit.ProcessRaisedException as exc:
                    print(str(exc).strip().splitlines()[-1])
            """
        )
    )
    proc = _run_program(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"AttributeError: Can't get attribute 'work' on <module '__main__' (the parent's "
        f"{script}, imported here as __mp_main__: what it defines under "
        "`if __name__ == '__main__':` is not here)>"
    )


FORKED = """
import gc, os, signal, sys, warnings
import spawnkit
from spawnkit_backends import _fork_server

def block(rank):
    while True:
        signal.pause()

def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

if __name__ == "__main__":
    warnings.simplefilter("error")  # a destructor's ResourceWarning reaches the hook
    ctx = spawnkit.spawn(block, nprocs=1, join=False, backend="forkserver")
    (server,) = _fork_server._servers.values()
    numbers = {server.control.fileno(), ctx.processes[0].sentinel}
    pid = os.fork()
    if pid == 0:
        dropped = []
        sys.unraisablehook = dropped.append
        taken = set()
        while not numbers <= taken:  # closed at the fork: the child's next files get them
            taken.add(os.open(os.devnull, os.O_RDONLY))
        del ctx
        gc.collect()
        closed = [fd for fd in sorted(numbers) if not is_open(fd)]
        os.write(1, f"closed {closed} dropped {[str(u.exc_value) for u in dropped]}\\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    ctx.terminate()
"""


def test_a_fork_of_the_job_leaves_the_servers_numbers_and_process_alone(tmp_path: Path) -> None:
    # A fork worker of another job, or the program's own fork, gets copies of the server's
    # socket and Popen objects, and of the running job's handles, whose descriptors were
    # closed at the fork. Collected there, they must not close what has the numbers now,
    # nor warn of a process that is not the fork's child.
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent(FORKED))
    proc = _run_program(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "closed [] dropped []\n", proc.stderr


# -- the server registry: credentials, threads, descriptor numbers, the deadline ------------

NOBODY = 65534


def _python_for_nobody() -> tuple[str, dict[str, str]]:
    """An interpreter of this version that uid ``NOBODY`` can run with spawnkit importable.

    This one may live where only root can look (pyenv under /root); the system's same
    version can do instead, given this environment's packages on PYTHONPATH.
    """
    import shutil
    import site

    import spawnkit_backends

    tests = os.path.dirname(os.path.abspath(ft.__file__))
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(spawnkit_backends.__file__)))
    path = os.pathsep.join([checkout, tests, *site.getsitepackages()])
    env = {**os.environ, "PYTHONPATH": path}
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")]
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            probe = subprocess.run(
                [python, "-c", "import psutil, spawnkit, _fork_server_targets"],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                env=env,
                cwd="/",
                capture_output=True,
                timeout=60,
                check=False,
            )
        except PermissionError:  # not even the interpreter is nobody's to run
            continue
        if probe.returncode == 0:
            return python, env
    pytest.skip(f"uid {NOBODY} can run no {version} here that imports spawnkit and psutil")


DROPS = """
import json, os, psutil, spawnkit
from spawnkit_backends import _fork_server
import _fork_server_targets as ft

first = spawnkit.spawn(ft.credentials, nprocs=1, backend="forkserver")[0]
os.setgroups([])
os.setgid({nobody})
os.setuid({nobody})
second = spawnkit.spawn(ft.credentials, nprocs=2, backend="forkserver")
print(json.dumps({{
    "first": first,
    "second": second,
    "servers": _fork_server.server_pids(),
    "old_there": psutil.pid_exists(first["server"]),
}}))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_job_that_dropped_privileges_gets_ranks_with_its_new_credentials() -> None:
    # A server started as root forks ranks as root: after setuid(nobody) the job's ranks
    # would keep the rights it gave up, and its terminate() could not signal them.
    python, env = _python_for_nobody()
    proc = subprocess.run(
        [python, "-c", textwrap.dedent(DROPS.format(nobody=NOBODY))],
        env=env,
        cwd="/",  # the ranks follow the job's cwd, which nobody must be able to enter
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    seen = json.loads(proc.stdout)
    assert seen["first"]["ids"] == [0, 0, 0, 0]
    for rank in seen["second"]:
        assert rank["ids"] == [NOBODY] * 4
        assert rank["groups"] in ([], [NOBODY])  # getgroups() may list the egid
    (new,) = {rank["server"] for rank in seen["second"]}
    assert new != seen["first"]["server"]
    assert seen["servers"] == [new]  # the root server was ended and reaped
    assert seen["old_there"] is False


THREADS = """
import json, os, sys, threading
import spawnkit
from spawnkit_backends import _fork_server

def preloaded(rank, names):
    return [name in sys.modules for name in names], os.getppid()

def run(names, index, results, errors):
    try:
        for job in range(4):
            if index == 3:  # a changed environment is another key too
                os.environ["SPAWNKIT_TEST_SETTING"] = str(job)
            ranks = spawnkit.spawn(
                preloaded, args=(names,), nprocs=2, backend="forkserver", preload=names
            )
            results.append([names, ranks])
    except BaseException as exc:
        errors.append(repr(exc))

if __name__ == "__main__":
    a, b = sys.argv[1:3]
    results, errors = [], []
    os.environ["SPAWNKIT_TEST_SETTING"] = "start"
    threads = [
        threading.Thread(target=run, args=(names, i, results, errors))
        for i, names in enumerate([[a], [b], [a, b], []])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    kept = _fork_server.server_pids()
    print(json.dumps({"results": results, "errors": errors, "kept": kept}))
"""


def test_jobs_in_threads_with_different_preloads_each_keep_their_server(tmp_path: Path) -> None:
    # A job of another key used to retire the server a job in another thread was using,
    # closing its socket under it ("Bad file descriptor").
    log = tmp_path / "imports.log"
    a, b = _probe_module(tmp_path, log), _probe_module(tmp_path, log)
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent(THREADS))
    proc = _run_program(script, a, b)
    assert proc.returncode == 0, proc.stderr
    import json

    seen = json.loads(proc.stdout)
    assert seen["errors"] == []
    assert len(seen["results"]) == 16
    servers = set()
    for names, ranks in seen["results"]:
        for loaded, server in ranks:
            assert loaded == [True] * len(names)
            servers.add(server)
    assert len(seen["kept"]) <= 1  # only the server of the last key asked for stays idle
    assert wait_gone(servers, timeout=10) == set()  # and none outlives the program


CLOSES = """
import os, stat, sys, spawnkit

def parent(rank):
    return os.getppid()

def is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False

if __name__ == "__main__":
    first = spawnkit.spawn(parent, nprocs=1, backend="forkserver")[0]
    (number,) = [fd for fd in range(3, 1024) if is_socket(fd)]  # the server's control socket
    os.closerange(3, 1024)
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    if fd != number:  # the program's file under the control socket's old number
        os.dup2(fd, number)
        os.close(fd)
    second = spawnkit.spawn(parent, nprocs=1, backend="forkserver")[0]
    os.write(number, b"the program's data")
    os.close(number)
    print(first, second)
"""


def test_a_control_socket_number_the_program_closed_and_reused_is_left_to_it(
    tmp_path: Path,
) -> None:
    # The next job closed the old socket's number, the program's file by then, and the new
    # server's socket took it: the program's writes went into the server.
    script = tmp_path / "closes.py"
    script.write_text(textwrap.dedent(CLOSES))
    data = tmp_path / "data"
    proc = _run_program(script, str(data))
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.split()
    assert first != second  # the first server saw end-of-file and ended
    assert data.read_bytes() == b"the program's data"
    assert wait_gone([int(first), int(second)], timeout=10) == set()


SLOW_MAIN = """
import os, sys, time
import spawnkit
from spawnkit.testing import descendants
from spawnkit.testing._processes import ZOMBIE, infrastructure_pids

if __name__ == "__mp_main__":
    time.sleep(30)  # a slow import, in the fork server only

def work(rank):
    return rank

if __name__ == "__main__":
    try:
        spawnkit.spawn(work, nprocs=2, backend="forkserver", timeout=2)
    except spawnkit.SpawnTimeoutError as exc:
        print("timed out:", exc.timeout, exc.running)
    # multiprocessing's resource tracker, which the job's ranks share, is no leak.
    left = descendants(exclude=infrastructure_pids())
    print("left:", [pid for pid, state in left.items() if state != ZOMBIE])
"""


TRACKING_SERVER = """
import spawnkit

def tracker_process(rank):
    from multiprocessing import resource_tracker
    return resource_tracker._resource_tracker._pid

if __name__ == "__mp_main__":  # in the fork server only
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()

if __name__ == "__main__":
    print(spawnkit.spawn(tracker_process, nprocs=2, backend="forkserver"))
"""


def test_a_ranks_tracker_is_the_jobs_though_the_server_started_its_own(tmp_path: Path) -> None:
    # What the server loads may start a tracker, which its ranks would inherit as their
    # child's: a job such a rank starts would then judge the job's tracker foreign.
    script = tmp_path / "tracking_server.py"
    script.write_text(textwrap.dedent(TRACKING_SERVER))
    proc = _run_program(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[None, None]\n"


def test_the_jobs_deadline_covers_the_fork_servers_start(tmp_path: Path) -> None:
    script = tmp_path / "slow_main.py"
    script.write_text(textwrap.dedent(SLOW_MAIN))
    proc = _run_program(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["timed out: 2 (0,)", "left: []"], proc.stderr
