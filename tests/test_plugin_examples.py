"""The guide's pinned-CPU backend, installed as its own distribution, passes the kit's tiers
its command prefix can break, and pins; the remote-style relay backend shares the job's fate
without any parent watch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing import BackendSuite, wait_for_files
from spawnkit.testing._processes import wait_gone

ROOT = Path(__file__).parent.parent
PINNED = ROOT / "tests" / "pinned_fixture" / "spawnkit_pinned.py"
GUIDE = ROOT / "docs" / "plugins.md"
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


class TestPinned(BackendSuite):
    backends = ("pinned",)
    # The fresh-interpreter backend, which the full kit proves as 'subprocess', behind a
    # command prefix: what a prefix can break is the start and the results, the stop that
    # must reach the Python that taskset execs, and the pid and exit status its exec must
    # keep. How failures are told and what the backend gives back are the fresh-interpreter
    # backend's and core's, whatever runs in front of Python.
    tiers = (
        "starting and results",
        "stopping",
        "pids and process groups",
        "exit signals",
        "os._exit status",
    )


def test_the_guide_shows_the_pinned_backend_as_it_is_tested() -> None:
    guide = GUIDE.read_text()
    found = re.search(
        r"<!-- example: tests/pinned_fixture/spawnkit_pinned.py -->\n```python\n(.*?)```",
        guide,
        re.DOTALL,
    )
    assert found is not None, "docs/plugins.md lost the pinned-CPU example"
    assert found.group(1) == PINNED.read_text()
    code = [line for line in found.group(1).splitlines() if line.strip()]
    assert len(code) <= 25  # about 20 lines: a building block, not a copy


def cpus_of(rank: int) -> list[int]:
    return sorted(os.sched_getaffinity(0))


@linux
@pytest.mark.timeout(60)
def test_each_pinned_rank_runs_on_its_own_cpu() -> None:
    if "pinned" not in spawnkit.available_backends():
        pytest.skip("the pinned backend is unavailable here (no taskset)")
    cpus = sorted(os.sched_getaffinity(0))
    nprocs = len(cpus) + 1
    got = spawnkit.spawn(cpus_of, nprocs=nprocs, backend="pinned")
    assert got == [[cpus[rank % len(cpus)]] for rank in range(nprocs)]


@linux
@pytest.mark.timeout(60)
def test_relay_ranks_die_with_the_job_that_was_killed(tmp_path: Path) -> None:
    """No watch is armed in a relay worker: the host ends them when the job's socket closes."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            import spawnkit

            def rank(i):
                # Whole or not at all: the test reads the file as soon as it exists.
                part = os.path.join({str(tmp_path)!r}, f"{{i}}.tmp")
                with open(part, "w") as f:
                    f.write(str(os.getpid()))
                os.replace(part, part[:-4] + ".pid")
                time.sleep(600)

            if __name__ == "__main__":
                ctx = spawnkit.spawn(rank, nprocs=2, backend="relay", join=False)
                assert ctx.pids() == [-1, -1]
                ctx.join()
            """
        )
    )
    job = subprocess.Popen([sys.executable, str(script)])
    try:
        wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid")
        workers = [int((tmp_path / f"{i}.pid").read_text()) for i in range(2)]
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
        assert wait_gone(workers, timeout=30) == set()
    finally:
        job.kill()
        job.wait()
