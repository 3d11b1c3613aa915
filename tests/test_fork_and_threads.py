"""Python 3.12+ warns when a process forks while other threads run (3.15 checks before the
fork, so warnings as errors stop it): spawnkit's own forks never cause that warning, the
test suite never does either, and a program that does cause it sees it as Python shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

linux = pytest.mark.skipif(sys.platform != "linux", reason="counts threads in /proc/self/task")
MULTI_THREADED = "is multi-threaded, use of fork() may lead to deadlocks in the child"


def _script(tmp_path: Path, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, *flags, str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


@linux
def test_a_test_runs_with_no_other_thread_in_the_test_process() -> None:
    # Every fork a test makes would warn on 3.15, an error under filterwarnings = error, if
    # something ran a thread through the tests (pytest's faulthandler_timeout does: a
    # watchdog thread; pytest-timeout's signal method does not).
    # A thread an earlier test joined may still be leaving the kernel's list for a moment
    # (3.12 and older do not wait for the system thread in join()): only one still there
    # after a second runs through the tests.
    deadline = time.monotonic() + 1
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(os.listdir("/proc/self/task")) == 1, [t.name for t in threading.enumerate()]


@linux
def test_no_thread_of_spawnkit_runs_at_the_forks_it_makes(tmp_path: Path) -> None:
    # Jobs one after another, with the output relay (a helper thread) in the first, and a
    # job left running: nothing of one job's is a thread at the next job's forks.
    proc = _script(
        tmp_path,
        """
        import json, os, time, spawnkit
        from spawnkit.testing import _targets as t

        def before_fork():
            # A thread that join() has returned for may still be leaving the kernel's list
            # for a moment (for long on 3.12 and older, whose join() does not wait for the
            # system thread): only a thread still there after a second counts as running.
            deadline = time.monotonic() + 1
            while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            threads.append(len(os.listdir("/proc/self/task")))

        if __name__ == "__main__":
            threads = []
            os.register_at_fork(before=before_fork)
            spawnkit.spawn(t.times, args=(2,), nprocs=2, backend="fork", prefix="[{rank}] ")
            spawnkit.spawn(t.times, args=(2,), nprocs=2, backend="fork")
            with spawnkit.spawn(t.block, nprocs=1, join=False, backend="fork") as running:
                spawnkit.spawn(t.times, args=(2,), nprocs=2, backend="fork", log_dir="logs",
                               tee=True)
                running.terminate()
            print(json.dumps(threads))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    threads = json.loads(proc.stdout.strip().splitlines()[-1])
    assert threads == [1] * 7


@pytest.mark.skipif(
    sys.version_info < (3, 12) or not hasattr(os, "fork"), reason="Python 3.12+ warns of it"
)
def test_a_program_that_forks_beside_its_own_thread_sees_pythons_warning(
    tmp_path: Path,
) -> None:
    # The program's thread is its own business: spawnkit neither hides the stdlib's warning
    # nor adds to it, on every Python that gives it.
    proc = _script(
        tmp_path,
        """
        import threading, spawnkit
        from spawnkit.testing import _targets as t

        if __name__ == "__main__":
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait)
            thread.start()
            try:
                print(spawnkit.spawn(t.times, args=(2,), nprocs=2, backend="fork"))
            finally:
                stop.set()
                thread.join()
        """,
        "-W",
        "always::DeprecationWarning",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 2]"
    assert proc.stderr.count(MULTI_THREADED) == 2, proc.stderr
