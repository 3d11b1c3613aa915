"""Core promises at the edges of the system: a rank the job may no longer signal, a script
without its main guard that starts the job from a thread, running out of descriptors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing._processes import kill_all, wait_gone

TESTS = Path(__file__).resolve().parent
posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX users, signals and limits")


def _program(
    tmp_path: Path, code: str, *argv: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script that can import the targets module.

    Its output goes to files: a process it leaves behind (on purpose, in some tests) would
    hold a pipe open.
    """
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    out, err = tmp_path / "program.out", tmp_path / "program.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.run(
            [sys.executable, str(script), *argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": path},
            check=False,
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())


# -- a rank the job may not signal ---------------------------------------------------------


def test_the_stop_error_pickles_with_its_fields() -> None:
    import pickle

    error = spawnkit.StopError("could not stop rank 1", 1, 4242, 1, (1, 3))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is spawnkit.StopError
    assert isinstance(copy, spawnkit.SpawnError)
    assert (str(copy), copy.rank, copy.pid, copy.errno, copy.ranks) == (
        "could not stop rank 1",
        1,
        4242,
        1,
        (1, 3),
    )
    assert type(copy).__module__ == "spawnkit"


@posix
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root: the job gives up its rights while its rank keeps them",
)
def test_a_stop_the_system_refuses_is_an_error_at_once(tmp_path: Path) -> None:
    # The job's program starts a rank as root, then drops to nobody (real, effective and
    # saved uid): from then on it may not signal its own rank. A grace period far above
    # what a refused stop may cost shows that nothing waited for the rank to stop.
    (tmp_path / "ranks").mkdir()
    proc = _program(
        tmp_path,
        """
        import json, os, sys
        from pathlib import Path

        import spawnkit
        from spawnkit.testing import wait_for_files

        import _core_hardening_targets as t

        ranks = Path(sys.argv[1])
        ctx = spawnkit.spawn(
            t.check_in_and_block, args=(str(ranks),), nprocs=1, join=False, backend="fork",
            grace_period=3600,  # a stop that waited for it would outlast the test's bound
        )
        wait_for_files(ranks / "rank-0")
        os.setresuid(65534, 65534, 65534)
        try:
            ctx.terminate()
        except spawnkit.StopError as exc:
            told = {"message": str(exc), "rank": exc.rank, "pid": exc.pid, "errno": exc.errno,
                    "ranks": list(exc.ranks)}
        else:
            told = None
        print(json.dumps({"error": told, "pids": ctx.pids()}), flush=True)
        # The rank still runs, and this process may not stop it: the test does.
        os._exit(0)
        """,
        str(tmp_path / "ranks"),
    )
    (pid,) = [int((tmp_path / "ranks" / "rank-0").read_text())]
    kill_all([pid])
    assert not wait_gone([pid], 10.0)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["pids"] == [pid]
    error = outcome["error"]
    assert error is not None, f"terminate() returned as if rank 0 had stopped: {outcome}"
    assert (error["rank"], error["pid"], error["ranks"]) == (0, pid, [0])
    assert error["errno"] == 1  # EPERM
    assert f"could not stop rank 0, pid {pid}" in error["message"]
    assert "EPERM" in error["message"]
    assert "kill -KILL" in error["message"]


# -- no main guard, the job started from a thread ------------------------------------------

_UNGUARDED = """
import os, threading

import spawnkit

# Every process that runs this top level says so: the job's, and each worker's import.
IMPORTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imports")
with open(IMPORTS, "a") as f:
    f.write(f"{{os.getpid()}}\\n")
with open(IMPORTS) as f:
    if len(f.read().splitlines()) > 12:
        os._exit(3)  # processes multiply: end them, so that a test of this fails, not hangs


def rank_number(rank):
    return rank


told = []


def start():
    try:
        told.append(repr(spawnkit.spawn(rank_number, nprocs=2, backend={backend!r})))
    except BaseException as exc:
        told.append(f"{{type(exc).__name__}}: {{exc}}")


thread = threading.Thread(target=start)
thread.start()
thread.join()
if __name__ == "__main__":  # where the script was run: print what the job came to
    print(told[0], flush=True)
"""


@posix
@pytest.mark.parametrize(
    ("backend", "imports"),
    # The job's process, each rank's import, and the fork server's (its ranks try again).
    [("subprocess", 3), ("spawn", 3), ("forkserver", 4)],
)
def test_a_job_started_from_a_thread_without_the_main_guard_fails_once(
    tmp_path: Path, backend: str, imports: int
) -> None:
    proc = _program(tmp_path, _UNGUARDED.format(backend=backend))
    assert proc.returncode == 0, proc.stderr
    pids = (tmp_path / "imports").read_text().split()
    assert len(pids) <= imports, f"{len(pids)} processes ran the script:\n{proc.stdout}"
    assert 'Put the code that starts the job under `if __name__ == "__main__":`' in proc.stdout, (
        proc.stdout + proc.stderr
    )


# -- out of descriptors ----------------------------------------------------------------------


@posix
def test_running_out_of_descriptors_while_starting_ranks_names_the_limit(tmp_path: Path) -> None:
    # A first job loads what every job needs; then the program keeps 20 descriptors free,
    # a few ranks' worth: the eight ranks of the second job cannot all start.
    proc = _program(
        tmp_path,
        """
        import json, os, resource

        import spawnkit
        from spawnkit.testing import descendants
        from spawnkit.testing._processes import infrastructure_pids

        import _core_hardening_targets as t

        assert spawnkit.spawn(t.rank_number, nprocs=1, backend="subprocess") == [0]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # New descriptors take the lowest free numbers below the limit: leave 20 of those.
        taken = {int(fd) for fd in os.listdir("/dev/fd")}
        limit = free = 0
        while free < 20:
            free += limit not in taken
            limit += 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            spawnkit.spawn(t.rank_number, nprocs=8, backend="subprocess")
        except spawnkit.LaunchError as exc:
            told = str(exc)
        else:
            told = None
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        left = sorted(descendants(exclude=infrastructure_pids()))
        print(json.dumps({"error": told, "limit": limit, "left": left}), flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    error = outcome["error"]
    assert error is not None, "eight ranks started with 20 free descriptors"
    assert "Too many open files" in error
    assert "EMFILE" in error
    assert f"RLIMIT_NOFILE: soft limit {outcome['limit']}" in error
    assert "executable=" not in error  # the interpreter is fine
    assert outcome["left"] == []


@posix
def test_a_popen_out_of_descriptors_does_not_blame_the_interpreter(tmp_path: Path) -> None:
    # A subclass that takes every free descriptor just before rank 1's Popen: Popen itself
    # (its /dev/null, its pipe) is what runs out.
    proc = _program(
        tmp_path,
        """
        import dataclasses, json, os, resource

        import spawnkit
        from spawnkit._registry import plugins
        from spawnkit_backends import FreshInterpreterBackend

        import _core_hardening_targets as t


        class Hoarding(FreshInterpreterBackend):
            hoard = []

            def popen_options(self, rank):
                while rank == 1:
                    try:
                        self.hoard.append(os.open(os.devnull, os.O_RDONLY))
                    except OSError:
                        break
                return {}

            def close(self):
                while self.hoard:
                    os.close(self.hoard.pop())
                super().close()


        registry = plugins()
        registry.backends["hoarding"] = dataclasses.replace(
            registry.backend("subprocess"), name="hoarding", factory=Hoarding
        )
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        try:
            spawnkit.spawn(t.rank_number, nprocs=2, backend="hoarding")
        except spawnkit.LaunchError as exc:
            told = str(exc)
        else:
            told = None
        print(json.dumps({"error": told}), flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error is not None
    assert error.startswith("backend 'hoarding' could not start rank 1 of 2: "), error
    assert "EMFILE" in error
    assert "executable=" not in error


@posix
def test_a_tracker_descriptor_the_program_reused_is_left_to_it(tmp_path: Path) -> None:
    # The program closed its resource tracker's descriptor (the tracker ended and was
    # reaped) and a pipe of its own took the number. multiprocessing would probe it (writing
    # into that pipe) before handing it on, and ranks sharing it would send their segments
    # there: a job only looks, and its ranks keep trackers of their own.
    proc = _program(
        tmp_path,
        """
        import os
        from multiprocessing import resource_tracker

        import spawnkit

        import _core_hardening_targets as t

        if __name__ == "__main__":
            resource_tracker.ensure_running()
            number = resource_tracker._resource_tracker._fd
            os.close(number)
            os.waitpid(resource_tracker._resource_tracker._pid, 0)  # it ended: nobody writes
            read, write = os.pipe()
            if write != number:
                os.dup2(write, number)
                os.close(write)
            for backend in ("subprocess", "forkserver"):
                spawnkit.spawn(t.use_shared_memory, backend=backend)
            os.close(number)
            print(repr(os.read(read, 4096)))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "b''\n"


@posix
def test_a_tracker_that_died_is_started_again_for_the_next_job(tmp_path: Path) -> None:
    # Its descriptor still looks right, a pipe nobody reads: handed on, every rank would
    # start a tracker of its own, and that one would unlink the segment as the rank ended.
    proc = _program(
        tmp_path,
        """
        import os, signal
        from multiprocessing import resource_tracker, shared_memory

        import spawnkit

        import _core_hardening_targets as t

        if __name__ == "__main__":
            segment = shared_memory.SharedMemory(create=True, size=8)  # starts the tracker
            dead = resource_tracker._resource_tracker._pid
            os.kill(dead, signal.SIGKILL)
            os.waitpid(dead, 0)
            for backend in ("subprocess", "forkserver"):
                spawnkit.spawn(t.use_shared_memory, args=(segment.name,), backend=backend)
                shared_memory.SharedMemory(name=segment.name).close()  # still there
            assert resource_tracker._resource_tracker._pid != dead
            segment.close()
            segment.unlink()
            print("kept")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "kept\n"


@posix
def test_a_tracker_that_cannot_start_is_a_launch_error_that_says_why(tmp_path: Path) -> None:
    proc = _program(
        tmp_path,
        """
        import os, resource

        import spawnkit

        import _core_hardening_targets as t

        if __name__ == "__main__":
            # Every descriptor below the soft limit taken: the tracker's pipe cannot open.
            taken = {int(fd) for fd in os.listdir("/dev/fd")}
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(taken) + 1, hard))
            held = [os.dup(0) for _ in range(max(taken) + 1 - len(taken))]
            try:
                spawnkit.spawn(t.rank_number, backend="subprocess")
            except spawnkit.LaunchError as exc:
                print(type(exc).__name__, "|", exc)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("LaunchError | could not start multiprocessing's resource")
    assert "EMFILE" in proc.stdout
