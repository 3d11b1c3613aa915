"""What a rank's start-up may skip: waiting for its helper threads, enum-made signal masks.

Each case runs in a ``python -c`` process of its own: it sets the interpreter's switch
interval so high that a new thread cannot run until the main thread blocks, which makes
"started but not yet running" a state the test holds rather than a race it hopes for.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal masks and fork()")

# A python -c snippet: the interpreter's start-up plus a few milliseconds of work, with
# wide room on a loaded machine; a hang (a wait on a thread that never runs) ends here.
SNIPPET_TIMEOUT = 60.0

_PRELUDE = """
import os, sys
from spawnkit._signals import threads
sys.setswitchinterval(1e6)  # the main thread keeps the GIL until it blocks
ran = []
"""


def _run(code: str, tmp_path: Path) -> str:
    # In tmp_path: the checkout's root on sys.path would shadow the installed spawnkit.
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_helper_thread_starts_without_holding_up_the_rank(tmp_path: Path) -> None:
    # start_thread() returns while the thread has not run (it cannot: the GIL is ours);
    # wait_running() returns once it has, as a worker needs before its interpreter ends.
    out = _run(
        """
        threads.start_thread(ran.append, 1)
        print("before", ran == [] and threads._starting[-1].locked())
        threads.wait_running()
        print("after", threads._starting == [])
        """,
        tmp_path,
    )
    assert out.split() == ["before", "True", "after", "True"]


@posix
def test_a_fork_does_not_wait_for_its_parents_helper_threads(tmp_path: Path) -> None:
    # Forked before the parent's helper thread ran, the child has that thread's lock held
    # for good: waiting for it would hang the child's exit (a rank's own fork, a nested
    # job's fork rank).
    out = _run(
        """
        threads.start_thread(ran.append, 1)
        pid = os.fork()
        if pid == 0:
            import signal
            signal.alarm(30)  # a child that waits for good ends, and the test fails, here
            threads.RUNNING_WAIT = 3600.0
            threads.wait_running()
            os._exit(0)
        print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        threads.wait_running()
        """,
        tmp_path,
    )
    assert out.split() == ["child", "0"]


@posix
def test_signal_masks_are_plain_numbers(tmp_path: Path) -> None:
    # The same masks as the signal module's calls give, without an enum made per signal.
    out = _run(
        """
        import signal
        from spawnkit._signals import mask
        print(mask.ALL == {int(s) for s in signal.valid_signals()})
        before = mask.block(mask.ALL)
        full = mask.set_mask(before)
        print(type(next(iter(full))) is int, full == mask.ALL - {signal.SIGKILL, signal.SIGSTOP})
        print(mask.set_mask(before) == before == {int(s) for s in signal.pthread_sigmask(
            signal.SIG_BLOCK, ())})
        """,
        tmp_path,
    )
    assert out.split() == ["True", "True", "True", "True"]
