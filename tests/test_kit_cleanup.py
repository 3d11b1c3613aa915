"""The kit cleans up after a wrong backend, and names the method a stuck one is blocked in.

Real processes throughout: an orphan that ignores SIGTERM in a session of its own, a zombie
adopted as a subreaper, faulthandler dumps of a process stuck in a module outside spawnkit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import forkserver
from pathlib import Path

import psutil
import pytest
import spawnkit
from spawnkit.testing._death_harness import Harness, HarnessError
from spawnkit.testing._hang import HangReport, describe_hang, hang_report, main_thread_frames
from spawnkit.testing._processes import (
    ZOMBIE,
    become_subreaper,
    descendants,
    leak_guard,
    wait_for_files,
    wait_gone,
)

pytestmark = [pytest.mark.timeout(60)]

linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a child subreaper is Linux only"
)
posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _stat(pid: int) -> tuple[int, str] | None:
    """``(ppid, status)`` of ``pid``, or ``None`` once it is not even a zombie."""
    try:
        process = psutil.Process(pid)
        return process.ppid(), process.status()
    except psutil.NoSuchProcess:
        return None


def _until_exited(pid: int) -> None:
    """Until child ``pid`` has exited, without reaping it: a zombie of ours."""
    if hasattr(os, "waitid"):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return
    deadline = time.monotonic() + 30  # macOS: no waitid; ps says it
    while descendants().get(pid) != ZOMBIE:
        assert time.monotonic() < deadline, f"{pid} never exited"
        time.sleep(0.005)


def _parent(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[0]


def _start_middle(tmp_path: Path, grandchild: str, *, new_session: bool) -> int:
    """Run a process that starts ``grandchild`` (Python code, argv: ``tmp_path``) and exits
    at once, orphaning it; return the grandchild's pid, once it wrote it to ``ready``."""
    code = tmp_path / "grandchild.py"
    code.write_text(textwrap.dedent(grandchild))
    middle = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            "subprocess.Popen([sys.executable, sys.argv[1], sys.argv[2]],"
            f" start_new_session={new_session})",
            str(code),
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,  # no pipe for the orphan to hold open
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert middle.wait(timeout=30) == 0
    wait_for_files(tmp_path / "ready")
    return int((tmp_path / "ready").read_text().split()[0])


# Ignores SIGTERM, leads a session (so a group) of its own, and has a second member in its
# group, its own child, that ignores SIGTERM too. Writes "its pid, the member's" to ready.
STUBBORN = """
    import os, signal, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    member = os.fork()
    if member == 0:
        while True:
            signal.pause()
    with open(os.path.join(sys.argv[1], "ready.tmp"), "w") as f:
        f.write(f"{os.getpid()} {member}")
    os.rename(os.path.join(sys.argv[1], "ready.tmp"), os.path.join(sys.argv[1], "ready"))
    while True:
        signal.pause()
"""


def _start_stubborn(tmp_path: Path) -> str:
    grandchild = _start_middle(tmp_path, STUBBORN, new_session=True)
    # Adopted by the test process, not init: leak_guard made it a subreaper.
    assert _parent(grandchild) == os.getpid()
    assert os.getpgid(grandchild) == grandchild != os.getpgid(0)
    return (tmp_path / "ready").read_text()


@linux
@pytest.mark.parametrize("block", ["ends", "raises"])
def test_an_orphan_that_ignores_sigterm_is_named_and_killed(tmp_path: Path, block: str) -> None:
    started: list[int] = []

    def guarded() -> None:
        # leak_guard's timeout is no bet: nothing here would ever end by itself.
        with leak_guard(timeout=0.5):
            started.extend(int(p) for p in _start_stubborn(tmp_path).split())
            if block == "raises":
                raise KeyError("the test's own failure")

    with pytest.raises(AssertionError if block == "ends" else KeyError) as info:
        guarded()
    grandchild, member = started
    if block == "ends":
        message = str(info.value)
        assert message.startswith("left processes behind: ")
        assert f"left processes behind: {min(grandchild, member)} (" in message
        assert f", {max(grandchild, member)} (" in message
        assert "grandchild.py" in message
        assert "still there after SIGKILL" not in message
    else:
        assert info.value.args == ("the test's own failure",)  # not masked by the guard
    # Killed and reaped: not even a zombie is left.
    assert _stat(grandchild) is None
    assert _stat(member) is None
    assert not {grandchild, member} & set(descendants())


# Writes its pid to ready, then waits to be killed.
PAUSED = """
    import os, signal, sys
    with open(os.path.join(sys.argv[1], "ready.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(sys.argv[1], "ready.tmp"), os.path.join(sys.argv[1], "ready"))
    while True:
        signal.pause()
"""


@linux
def test_a_leftover_run_from_a_long_path_is_named_by_its_script(tmp_path: Path) -> None:
    # A checkout or a temporary directory deep in the file system: the command line is long,
    # and where it is cut decides whether the message still says what leaked.
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    started: list[int] = []
    # leak_guard's timeout is no bet: the leftover never ends by itself.
    with pytest.raises(AssertionError) as info, leak_guard(timeout=0.5):
        started.append(_start_middle(deep, PAUSED, new_session=False))
    message = str(info.value)
    assert message.startswith(f"left processes behind: {started[0]} ("), message
    assert "grandchild.py" in message
    # Still cut, in the middle: the path that made it long is not there in full.
    assert str(deep) not in message
    assert _stat(started[0]) is None


@linux
def test_wait_gone_reaps_an_orphan_that_became_our_zombie(tmp_path: Path) -> None:
    assert become_subreaper()
    orphan = _start_middle(
        tmp_path,
        """
        import os, signal, sys
        with open(os.path.join(sys.argv[1], "ready.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.rename(os.path.join(sys.argv[1], "ready.tmp"), os.path.join(sys.argv[1], "ready"))
        while True:
            signal.pause()
        """,
        new_session=False,
    )
    assert _parent(orphan) == os.getpid()  # adopted
    os.kill(orphan, signal.SIGTERM)
    _until_exited(orphan)
    assert _stat(orphan) == (os.getpid(), ZOMBIE)
    assert wait_gone([orphan], timeout=0) == set()
    assert _stat(orphan) is None


@posix
def test_wait_gone_leaves_a_child_to_the_popen_that_waits_for_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    _until_exited(child.pid)
    # A zombie, still there: its exit status is the Popen's to read, not ours to take.
    assert wait_gone([child.pid], timeout=0) == {child.pid}
    assert child.wait(timeout=30) == 3
    assert wait_gone([child.pid], timeout=0) == set()


@posix
def test_wait_gone_never_reaps_the_fork_server() -> None:
    forkserver.ensure_running()
    server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    os.kill(server, signal.SIGKILL)
    _until_exited(server)
    try:
        assert wait_gone([server], timeout=0) == {server}
    finally:
        # multiprocessing reaps it, and would fail with ChildProcessError had we done so.
        forkserver.ensure_running()
    assert wait_gone([server], timeout=0) == set()


# -- where a stuck process hung -----------------------------------------------------------

# A module outside spawnkit with methods that block for good. A thread of theirs acts only
# once the main thread is inside the wait of a "# STUCK" line: the dump can find it nowhere
# else. (Inside threading is not enough: Thread.start() waits too, for a moment.)
STUCK = """
    import faulthandler, linecache, sys, threading, time

    def until_waiting(main):
        while True:
            frame = sys._current_frames()[main]
            inner = frame.f_code.co_filename == threading.__file__
            while frame is not None and frame.f_code.co_filename == threading.__file__:
                frame = frame.f_back
            if inner and frame is not None:
                line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                if line.rstrip().endswith("# STUCK"):
                    return
            time.sleep(0.001)

    def watchdog(main):
        until_waiting(main)
        faulthandler.dump_traceback_later(0.01, exit=True)
        threading.Event().wait()

    def announce(main, ready):
        until_waiting(main)
        open(ready, "w").close()

    class Handle:
        def poll(self):
            threading.Thread(target=watchdog, args=(threading.get_ident(),)).start()
            threading.Event().wait()  # STUCK

    class StuckPath:
        def __init__(self, ready):
            self.ready = ready

        def exists(self):
            args = (threading.get_ident(), self.ready)
            threading.Thread(target=announce, args=args).start()
            threading.Event().wait()  # STUCK
"""


# Stuck in StuckPath.exists(), called by spawnkit's own wait_for_files(); argv: the module's
# folder, the file to write once it is stuck.
_STUCK_MAIN = """
import resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_CORE)
resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # no core file for SIGABRT
sys.path.insert(0, sys.argv[1])
import stuck_backend
from spawnkit.testing._processes import wait_for_files
wait_for_files(stuck_backend.StuckPath(sys.argv[2]))
"""


def _stuck_module(tmp_path: Path) -> tuple[Path, list[int]]:
    """The module, and the lines of its ``# STUCK`` marks: ``poll``'s, ``exists``'s."""
    module = tmp_path / "stuck_backend.py"
    module.write_text(textwrap.dedent(STUCK))
    lines = module.read_text().splitlines()
    return module, [i + 1 for i, line in enumerate(lines) if line.endswith("# STUCK")]


def test_describe_hang_names_the_function_a_real_process_hung_in(tmp_path: Path) -> None:
    module, (line, _) = _stuck_module(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import stuck_backend;"
            " stuck_backend.Handle().poll()",
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # faulthandler's exit=True
    assert proc.stderr.startswith("Timeout ("), proc.stderr
    assert "in watchdog" in proc.stderr  # two threads: the main one is the one described
    description = describe_hang(proc.stderr)
    assert description.startswith(
        f"{module}:{line} in poll() (outside spawnkit's core), waiting in "
    ), description
    assert "threading.py:" in description
    assert description.endswith(" in wait()"), description


@posix
def test_describe_hang_skips_spawnkits_own_frames(tmp_path: Path) -> None:
    # The harness's way: faulthandler on, SIGABRT once it is known stuck. Here it is stuck
    # in a method that spawnkit's own code called: the method is the frame named.
    module, (_, line) = _stuck_module(tmp_path)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", _STUCK_MAIN, str(tmp_path), str(ready)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_files(ready)
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGABRT, err
    calls = [(f.function, Path(f.file).name) for f in main_thread_frames(err)]
    # The method, called from spawnkit's own code: the method is named, not its caller.
    assert calls.index(("exists", "stuck_backend.py")) < calls.index(
        ("wait_for_files", "_processes.py")
    ), err
    description = describe_hang(err)
    assert description.startswith(
        f"{module}:{line} in exists() (outside spawnkit's core), waiting in "
    ), description


@posix
def test_the_death_harness_names_where_a_stuck_parent_is(tmp_path: Path) -> None:
    module, (_, line) = _stuck_module(tmp_path)
    ready = tmp_path / "ready"
    harness = Harness({"tmp": str(tmp_path), "bound": 0.0})
    with (tmp_path / "parent.out").open("wb") as out:
        # Started as the harness starts its parent: faulthandler on, output to parent.out.
        harness.parent = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-c", _STUCK_MAIN, str(tmp_path), str(ready)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_files(ready)
        with pytest.raises(HarnessError) as info:
            harness._wait_parent_exit(time.monotonic())
    finally:
        if harness.parent.poll() is None:
            harness.parent.kill()
        harness.parent.wait()
    assert str(info.value).startswith(
        f"the parent did not exit in time; it was stuck in {module}:{line} in exists()"
        " (outside spawnkit's core), waiting in "
    ), info.value


def test_describe_hang_without_a_dump() -> None:
    assert describe_hang("no traceback here\n") == (
        "an unknown place (no faulthandler traceback found)"
    )


def _spin_until_dumped(report: HangReport) -> None:
    deadline = time.monotonic() + 30
    while not report.hung:  # written by faulthandler's own thread
        assert time.monotonic() < deadline, "faulthandler never dumped"
        time.sleep(0.005)


def test_hang_report_names_where_the_block_was_when_it_fired() -> None:
    with hang_report(60) as quick:
        pass
    assert not quick.hung
    assert quick.description is None

    reports: list[HangReport] = []

    def hang_then_fail() -> None:
        with hang_report(0.01) as report:
            reports.append(report)
            _spin_until_dumped(report)
            raise RuntimeError("timed out")

    with pytest.raises(RuntimeError) as info:
        hang_then_fail()
    (report,) = reports
    assert report.hung
    assert report.description is not None
    # Wherever the timer caught the block, the innermost frame outside spawnkit's core
    # and the standard library is in this file.
    assert report.description.startswith(f"{__file__}:"), report.description
    assert "(outside spawnkit's core)" in report.description
    if sys.version_info >= (3, 11):
        assert info.value.__notes__ == [f"still running after 0.01 s, in {report.description}"]


@pytest.mark.timeout(90)
def test_a_backend_whose_poll_blocks_fails_fast_naming_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "relay" not in spawnkit.available_backends():
        pytest.skip("the relay fixture backend is not installed or unavailable here")
    from spawnkit.testing._probe import run_probe

    monkeypatch.setenv("SPAWNKIT_RELAY_BROKEN", "poll")
    message = run_probe("relay", seconds=5)
    assert message is not None
    assert "did not finish a two-rank job" in message
    assert "in poll()" in message
    assert "spawnkit_relay" in message
    assert "backend.py" in message
    monkeypatch.delenv("SPAWNKIT_RELAY_BROKEN")
    assert run_probe("relay", seconds=60) is None
