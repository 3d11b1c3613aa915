"""What only the ``subprocess`` backend does: its options, the main module, other interpreters.

The shared behaviour (results, errors, signals, terminate) is tests/test_behaviour.py's.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import psutil
import pytest
import spawnkit
from spawnkit.testing import wait_for_files
from spawnkit_backends import _fresh

import _reexec_targets as rt

BACKEND = "subprocess"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _spawn(fn: Any, *args: Any, nprocs: int = 1, **options: Any) -> list[Any]:
    return spawnkit.spawn(fn, args=args, nprocs=nprocs, backend=BACKEND, **options)


def _fd_count() -> int:
    return int(psutil.Process().num_fds())


@cache
def _other_pythons() -> tuple[tuple[str, tuple[int, int]], ...]:
    """Runnable interpreters of another version than this one: ``(real path, (3, minor))``.

    ``python3.X`` on PATH (tools/with-pythons puts 3.10-3.13 there), then pyenv's versions.
    """
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python3.{minor}") for minor in range(7, 14)]
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3")))
    found: dict[tuple[int, int], str] = {}
    for exe in candidates:
        if exe is None:
            continue
        try:
            out = subprocess.run(
                [exe, "-c", "import sys; print(sys.executable); print(*sys.version_info[:2])"],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = out.stdout.split("\n")
        if out.returncode != 0 or len(lines) < 2:
            continue  # a pyenv shim for a version this shell has not selected
        major, minor = (int(x) for x in lines[1].split())
        if (major, minor) != sys.version_info[:2]:
            found.setdefault((major, minor), lines[0])
    return tuple((exe, version) for version, exe in sorted(found.items()))


def _supported_other_python() -> tuple[str, tuple[int, int]]:
    for exe, version in _other_pythons():
        if version >= (3, 10):
            return exe, version
    pytest.skip(
        "no other Python 3.10-3.13 runs here; run under tools/with-pythons, which puts them on PATH"
    )


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``args`` in ``cwd``: a real parent process for a job."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=100
    )


def _python_c(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _python("-c", textwrap.dedent(code), cwd=cwd)


def _write(path: Path, code: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


# -- options reach the worker ---------------------------------------------------------------


def test_env_adds_to_the_environment_from_the_interpreters_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPAWNKIT_PARENT_ONLY", "1")
    env = {"SPAWNKIT_CHOSEN": "yes", "PYTHONOPTIMIZE": "1"}
    for got in _spawn(rt.surroundings, nprocs=2, env=env):
        # Read by the interpreter as it started: the variable was there before the worker ran.
        assert got["optimize"] == 1
    for got in _spawn(rt.environment, nprocs=2, env=env):
        assert got["SPAWNKIT_CHOSEN"] == "yes"
        assert got["SPAWNKIT_PARENT_ONLY"] == "1"


def test_environment_is_inherited_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAWNKIT_PARENT_ONLY", "inherited")
    (got,) = _spawn(rt.environment)
    assert got["SPAWNKIT_PARENT_ONLY"] == "inherited"


def test_cwd_is_the_workers_working_directory(tmp_path: Path) -> None:
    got = _spawn(rt.surroundings, nprocs=2, cwd=tmp_path)
    assert [g["cwd"] for g in got] == [str(tmp_path.resolve())] * 2


def test_interpreter_args_reach_the_interpreter() -> None:
    (got,) = _spawn(rt.surroundings, interpreter_args=["-X", "faulthandler", "-O"])
    assert got["xoptions"].get("faulthandler") is True
    assert got["optimize"] == 1


def test_isolated_interpreter_still_finds_the_jobs_modules() -> None:
    # -I drops the script directory, PYTHONPATH and the user site; the job's own sys.path
    # entries (here, the tests directory) still come from the parent.
    (got,) = _spawn(rt.surroundings, interpreter_args=["-I"])
    assert got["rank"] == 0


def test_worker_gets_the_parents_argv_and_path_but_not_its_main() -> None:
    (got,) = _spawn(rt.surroundings)
    assert got["argv"] == sys.argv
    tests_dir = str(Path(__file__).resolve().parent)
    assert tests_dir in got["path"]
    assert got["main"] == "__main__"  # pytest's own entry point was not imported


def test_another_interpreter_runs_a_rank() -> None:
    exe, version = _supported_other_python()
    got = _spawn(rt.surroundings, nprocs=2, executable=exe)
    assert [g["version"] for g in got] == [version, version]
    assert all(os.path.realpath(g["executable"]) == os.path.realpath(exe) for g in got)
    # That interpreter's own standard library, not this one's.
    here = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert not any(here in entry.split(os.sep) for entry in got[0]["path"])


def test_only_a_rank_of_the_same_python_shares_the_resource_tracker() -> None:
    # Another version may speak to its tracker otherwise: that rank keeps one of its own.
    exe, _ = _supported_other_python()
    assert _spawn(rt.tracker_descriptor) != [None]
    assert _spawn(rt.tracker_descriptor, executable=exe) == [None]


def test_a_lookup_of_the_tracker_module_before_its_import_keeps_the_job_tracker() -> None:
    assert _spawn(rt.tracker_descriptor, True) != [None]


def test_executable_is_looked_up_on_path_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my-python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    (got,) = _spawn(rt.surroundings, executable="my-python")
    assert got["version"] == tuple(sys.version_info[:2])


# -- the payload's way ----------------------------------------------------------------------


def test_hundred_megabyte_payload_arrives_intact() -> None:
    data = os.urandom(100 * 1024 * 1024)
    expected = (len(data), hashlib.sha256(data).hexdigest())
    assert _spawn(rt.checksum, data, nprocs=2) == [expected, expected]


@linux_only
def test_payload_is_not_in_the_workers_command_line_or_environment(tmp_path: Path) -> None:
    secret = f"spawnkit-secret-{uuid.uuid4().hex}"
    payload = secret + "x" * 100_000
    ctx = spawnkit.spawn(
        rt.ready_then_block, args=(str(tmp_path), payload), join=False, backend=BACKEND
    )
    with ctx:
        wait_for_files(tmp_path / "0.ready")
        (pid,) = ctx.pids()
        worker = psutil.Process(pid)
        cmdline = " ".join(worker.cmdline())
        environ = "\0".join(f"{k}={v}" for k, v in worker.environ().items())
        assert "fresh_worker.py" in cmdline  # the right process was inspected
        assert secret not in cmdline
        assert secret not in environ


@linux_only
def test_a_descriptor_numbered_0_in_the_parent_reaches_the_worker(tmp_path: Path) -> None:
    # A program started with stdin closed gets 0 for its next pipe; the worker's own stdin
    # (/dev/null) must not take that number's place.
    script = _write(
        tmp_path / "job.py",
        """
        import multiprocessing, os
        import spawnkit

        def receive(rank, reader):
            return reader.recv()

        if __name__ == "__main__":
            os.close(0)
            reader, writer = multiprocessing.Pipe(duplex=False)
            writer.send("through descriptor 0")
            print(reader.fileno(), spawnkit.spawn(receive, args=(reader,), backend="subprocess"))
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 ['through descriptor 0']"


def test_only_the_specs_descriptors_reach_the_worker(tmp_path: Path) -> None:
    stray = tmp_path / "inheritable-but-not-passed"
    fd = os.open(stray, os.O_WRONLY | os.O_CREAT)
    try:
        os.set_inheritable(fd, True)
        (held,) = _spawn(rt.open_descriptors)
    finally:
        os.close(fd)
    assert str(stray) not in held.values()
    # stdio, the result pipe, the watch's descriptor, the job's resource tracker, and both
    # ends of the pipe the interpreter notes caught signals in (spawnkit's SIGTERM nudge);
    # the spec pipe was closed after reading.
    extra = {n: target for n, target in held.items() if n > 2}
    assert len(extra) <= 5, extra
    assert all(t.startswith(("pipe:", "anon_inode:")) for t in extra.values()), extra


def test_a_rank_imports_neither_multiprocessing_nor_typing_for_itself(tmp_path: Path) -> None:
    # Imports every rank would pay for before fn. The job's resource tracker is handed to
    # multiprocessing as the program imports its module (the shared-memory check of the kit),
    # not before. From a `python -c` parent, with fn in a module that imports only sys: a
    # rank of pytest imports pytest's __main__, and a target module its own imports.
    (tmp_path / "bare.py").write_text("import sys\ndef modules(rank): return sorted(sys.modules)")
    code = f"""if True:
        import json, spawnkit, bare
        print(json.dumps(spawnkit.spawn(bare.modules, backend={BACKEND!r})[0]))
    """
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    modules = json.loads(out)
    assert "spawnkit._worker" in modules  # what it reads is a rank's
    assert [m for m in modules if m.partition(".")[0] in ("multiprocessing", "typing")] == []


def test_big_payloads_for_every_rank_arrive_intact_and_leave_no_writer_thread() -> None:
    # Each rank's payload goes down its own pipe from its own thread: all of them together
    # are far more than the pipes hold.
    data = os.urandom(8 * 1024 * 1024)
    expected = (len(data), hashlib.sha256(data).hexdigest())
    before = threading.active_count()
    assert _spawn(rt.checksum, data, nprocs=4) == [expected] * 4
    assert threading.active_count() == before


# -- the parent's __main__ ------------------------------------------------------------------

# The workers write each line whole, in one write: print() writes its parts and the newline
# one by one when PYTHONUNBUFFERED=1, and two ranks' lines would interleave.
_SCRIPT = """
    import os
    import sys
    import spawnkit

    sys.stdout.write(f"top level as {__name__}\\n")
    sys.stdout.flush()

    class Point:
        def __init__(self, x):
            self.x = x

    def work(rank, scale):
        return Point(rank * scale), __name__

    if __name__ == "__main__":
        print("main block", flush=True)
        got = spawnkit.spawn(work, args=(10,), nprocs=2, backend="subprocess")
        assert all(isinstance(p, Point) for p, _ in got), got
        print("results", [p.x for p, _ in got], [name for _, name in got], flush=True)
"""


def test_function_from_a_scripts_main_is_found_without_rerunning_its_main_block(
    tmp_path: Path,
) -> None:
    script = _write(tmp_path / "job.py", _SCRIPT)
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("main block") == 1
    assert lines.count("top level as __main__") == 1
    assert lines.count("top level as __mp_main__") == 2  # each worker imported the script
    assert lines[-1] == "results [0, 10] ['__mp_main__', '__mp_main__']"


def test_function_from_a_main_module_run_with_dash_m(tmp_path: Path) -> None:
    _write(tmp_path / "app" / "__init__.py", "")
    _write(tmp_path / "app" / "job.py", _SCRIPT)
    out = _python("-m", "app.job", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "results [0, 10] ['__mp_main__', '__mp_main__']"


def test_function_from_a_packages_main_travels_by_value(tmp_path: Path) -> None:
    # `python -m app` runs app/__main__.py, which a worker must never import (it runs its
    # main code whenever it is imported): what it defines goes by value, or is refused.
    pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
    _write(tmp_path / "app" / "__init__.py", "")
    _write(
        tmp_path / "app" / "__main__.py",
        """
        import spawnkit

        print("package main ran", flush=True)

        def work(rank):
            return rank * 3

        print(spawnkit.spawn(work, nprocs=2, backend="subprocess"), flush=True)
        """,
    )
    out = _python("-m", "app", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["package main ran", "[0, 3]"]


def test_worker_of_a_dash_m_parent_starts_a_spawn_job_before_loading_main(
    tmp_path: Path,
) -> None:
    # The worker's __main__ is still the stand-in: multiprocessing's spawn reads the main
    # module's name from it, or runs the file by path, where `from . import` fails.
    _write(tmp_path / "app" / "__init__.py", "")
    _write(tmp_path / "app" / "sibling.py", "")
    _write(
        tmp_path / "app" / "nested.py",
        """
        import spawnkit

        def inner(rank):
            return rank + 10

        def outer(rank):
            return spawnkit.spawn(inner, nprocs=1, backend="spawn")
        """,
    )
    _write(
        tmp_path / "app" / "job.py",
        """
        import spawnkit
        from . import sibling
        from .nested import outer

        if __name__ == "__main__":
            print(spawnkit.spawn(outer, nprocs=1, backend="subprocess"))
        """,
    )
    out = _python("-m", "app.job", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[10]]"


def test_worker_starts_its_own_job_from_the_same_script(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "nested.py",
        """
        import spawnkit

        def inner(rank):
            return rank

        def outer(rank):
            return spawnkit.spawn(inner, nprocs=2, backend="subprocess")

        if __name__ == "__main__":
            print(spawnkit.spawn(outer, nprocs=2, backend="subprocess"))
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[0, 1], [0, 1]]"


def test_function_defined_under_the_main_guard_gives_an_error_that_says_why(
    tmp_path: Path,
) -> None:
    script = _write(
        tmp_path / "guarded.py",
        """
        import spawnkit

        if __name__ == "__main__":
            def work(rank):
                return rank

            try:
                spawnkit.spawn(work, backend="subprocess")
            except spawnkit.ProcessRaisedException as exc:
                print(str(exc).strip().splitlines()[-1])
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip()
    assert last.startswith("AttributeError: Can't get attribute 'work'")
    assert last.endswith(
        f"<module '__main__' (the parent's {script}, imported here as __mp_main__: what it "
        "defines under `if __name__ == '__main__':` is not here)>"
    )


def test_main_script_is_not_imported_when_the_job_does_not_need_it(tmp_path: Path) -> None:
    _write(tmp_path / "helpers.py", "def double(rank):\n    return rank * 2\n")
    script = _write(
        tmp_path / "job.py",
        """
        import spawnkit
        import helpers

        if __name__ != "__main__":
            raise RuntimeError("the script was imported in a worker")

        print(spawnkit.spawn(helpers.double, nprocs=2, backend="subprocess"))
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 2]"


def test_error_while_importing_the_main_script_is_the_ranks_error(tmp_path: Path) -> None:
    script = _write(
        tmp_path / "job.py",
        """
        import spawnkit

        def work(rank):
            return rank

        if __name__ == "__mp_main__":
            raise RuntimeError("no workers from this script")

        if __name__ == "__main__":
            try:
                spawnkit.spawn(work, backend="subprocess")
            except spawnkit.ProcessRaisedException as exc:
                print(type(exc.exception).__name__, exc.exception)
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RuntimeError no workers from this script"


def test_main_script_that_exits_as_a_worker_imports_it_fails_the_rank(tmp_path: Path) -> None:
    # Its sys.exit(0) is not fn's: counted as fn's, fn would pass for having returned None.
    script = _write(
        tmp_path / "job.py",
        """
        import sys
        import spawnkit

        if __name__ != "__main__":
            sys.exit(0)

        def work(rank):
            return "work ran"

        try:
            print(spawnkit.spawn(work, nprocs=2, backend="subprocess"))
        except spawnkit.ProcessRaisedException as exc:
            print(type(exc.exception).__name__, exc.exception)
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"RuntimeError the parent's main module {script} called sys.exit(0) while this worker "
        "imported it as __mp_main__; exit under its `if __name__ == '__main__':` block only"
    )


def test_main_script_keeps_its_own_compiler_flags_in_a_worker(tmp_path: Path) -> None:
    # spawnkit's modules use `from __future__ import annotations`; the script does not.
    script = _write(
        tmp_path / "job.py",
        """
        import spawnkit

        def typed(x: int) -> int:
            return x

        def work(rank):
            return typed.__annotations__["x"] is int

        if __name__ == "__main__":
            print(spawnkit.spawn(work, nprocs=1, backend="subprocess"))
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True]"


def test_threads_looking_into_main_while_it_loads_wait_for_all_of_it(tmp_path: Path) -> None:
    _write(
        tmp_path / "lookers.py",
        """
        import sys
        import threading

        loading = threading.Event()
        second_done = threading.Event()

        def look(stand_in, out, after=None):
            if after is not None:
                after.wait(30)
            try:
                out.append(getattr(stand_in, "VALUE"))
            except AttributeError as exc:
                out.append(str(exc))
            if after is not None:
                second_done.set()

        def work(rank):
            stand_in, first, second = sys.modules["__main__"], [], []
            threads = [
                threading.Thread(target=look, args=(stand_in, first)),
                threading.Thread(target=look, args=(stand_in, second, loading)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return first + second
        """,
    )
    script = _write(
        tmp_path / "job.py",
        """
        import spawnkit
        import lookers

        if __name__ == "__mp_main__":
            # The first look loads this script; the second comes while it loads, and
            # cannot end before VALUE exists: it waits for the load.
            lookers.loading.set()
            lookers.second_done.wait(0.5)

        VALUE = 42

        if __name__ == "__main__":
            print(spawnkit.spawn(lookers.work, nprocs=1, backend="subprocess"))
        """,
    )
    out = _python(str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[42, 42]]"


def test_function_from_python_dash_c_gives_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    # Without cloudpickle (hidden here) the function cannot travel: refused before any start.
    out = _python_c(
        """
        import sys
        sys.modules["cloudpickle"] = None
        import spawnkit

        def work(rank):
            return rank

        try:
            spawnkit.spawn(work, backend="subprocess")
        except spawnkit.NotPicklableError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("cannot send <function work")
    assert "the main program, and the parent runs code given with `python -c`" in last
    assert "define it at module level of a module file" in last
    assert 'install cloudpickle (pip install "spawnkit[cloudpickle]")' in last


def test_program_without_a_file_reads_as_a_module_without_the_name(tmp_path: Path) -> None:
    # getattr(__main__, name, default) is how libraries ask; a worker answers as the parent.
    pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
    out = _python_c(
        """
        import spawnkit

        def work(rank):
            import __main__
            return getattr(__main__, "DEBUG", "default"), hasattr(__main__, "work")

        print(spawnkit.spawn(work, nprocs=1, backend="subprocess"))
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('default', False)]"


def test_instance_of_a_class_sent_by_value_comes_back(tmp_path: Path) -> None:
    pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
    out = _python_c(
        """
        import spawnkit

        class Point:
            def __init__(self, x):
                self.x = x

        def work(rank):
            return Point(rank)

        got = spawnkit.spawn(work, nprocs=2, backend="subprocess")
        print([type(p) is Point for p in got], [p.x for p in got])
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True, True] [0, 1]"


def test_function_from_python_dash_c_travels_by_value_with_cloudpickle(tmp_path: Path) -> None:
    pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
    out = _python_c(
        """
        import spawnkit

        def work(rank):
            return rank * 2

        print(spawnkit.spawn(work, nprocs=2, backend="subprocess"))
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 2]"


def test_module_in_the_parents_directory_is_found_from_another_cwd(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write(project / "mymod.py", "import os\ndef work(rank):\n    return os.getcwd()\n")
    out = _python_c(
        f"""
        import spawnkit, mymod
        print(spawnkit.spawn(mymod.work, backend="subprocess", cwd={str(elsewhere)!r}))
        """,
        project,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr([str(elsewhere)])


def test_spawnkit_run_finds_a_module_in_the_current_directory(tmp_path: Path) -> None:
    greet = """
        import sys

        def hello(rank, who):
            sys.stdout.write(f"{rank} {who}\\n")
            sys.stdout.flush()
        """
    _write(tmp_path / "greet.py", greet)
    command = ["-m", "spawnkit", "run", "-b", BACKEND, "-n", "2", "greet:hello", "you"]
    out = _python(*command, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == ["[rank 0]: 0 you", "[rank 1]: 1 you"]


# -- interpreters that cannot run the job ---------------------------------------------------


def test_payload_the_worker_cannot_unpickle_names_the_missing_module() -> None:
    import pluggy  # a runtime dependency: installed here, in no bare interpreter

    for exe, version in _other_pythons():
        probe = subprocess.run(
            [exe, "-c", "import pluggy"], check=False, capture_output=True, timeout=60
        )
        if version >= (3, 10) and probe.returncode != 0:
            break
    else:
        pytest.skip("no other Python 3.10-3.13 without pluggy runs here; use tools/with-pythons")
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        _spawn(rt.identity, pluggy.HookimplMarker("x"), executable=exe)
    assert str(info.value).rstrip().endswith("ModuleNotFoundError: No module named 'pluggy'")


def test_interpreter_too_old_for_spawnkit_is_named() -> None:
    old = [(exe, v) for exe, v in _other_pythons() if (3, 7) <= v < (3, 10)]
    if not old:
        pytest.skip("no Python 3.7, 3.8 or 3.9 runs here")
    exe, version = old[-1]  # the newest one too old: it pins where the line is drawn
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        _spawn(rt.identity, 1, executable=exe)
    last = str(info.value).rstrip().splitlines()[-1]
    assert last.startswith("RuntimeError: the worker's interpreter")
    assert f"(Python {version[0]}.{version[1]}." in last
    assert "spawnkit needs Python 3.10 or newer" in last
    assert isinstance(info.value.exception, RuntimeError)


# -- bad options ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "directory", "not executable", "not on PATH"])
def test_broken_executable_is_a_launch_error_naming_it(tmp_path: Path, kind: str) -> None:
    if kind == "missing":
        exe = str(tmp_path / "no-such-python")
    elif kind == "directory":
        exe = str(tmp_path)
    elif kind == "not executable":
        exe = str(_write(tmp_path / "python", "#!/bin/sh\n"))
    else:
        exe = f"no-such-python-{uuid.uuid4().hex}"
    fds = _fd_count()
    with pytest.raises(spawnkit.LaunchError) as info:
        _spawn(rt.identity, 1, nprocs=2, executable=exe)
    assert repr(exe) in str(info.value)
    assert "pass executable=" in str(info.value)
    assert _fd_count() == fds


@pytest.mark.parametrize("program", ["/bin/true", "/bin/sh -c exit"])
def test_executable_that_is_no_python_and_exits_0_is_a_failure_not_a_result(
    tmp_path: Path, program: str
) -> None:
    exe = _write(tmp_path / "not-python", f"#!/bin/sh\nexec {program}\n")
    exe.chmod(0o755)
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        _spawn(rt.identity, 1, executable=str(exe))
    assert (
        str(info.value)
        .rstrip()
        .endswith(
            f"RuntimeError: executable {str(exe)!r} exited with status 0 without running "
            "spawnkit's worker script: it is not a Python interpreter, or a wrapper that does not "
            "run the command it is given; pass executable= the path of a Python interpreter"
        )
    )


def test_worker_that_never_reads_its_job_costs_the_parent_no_sigpipe(tmp_path: Path) -> None:
    # The parent restored SIGPIPE's default action (die), as some programs do; the job's
    # payload is far bigger than any socket buffer, and the "worker" exits without reading.
    exe = _write(tmp_path / "not-python", "#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    out = _python_c(
        f"""
        import signal, spawnkit
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        try:
            spawnkit.spawn(max, args=(b"x" * 32_000_000,), nprocs=2, backend="subprocess",
                           executable={str(exe)!r})
        except spawnkit.ProcessRaisedException as exc:
            print("survived:", str(exc).strip().splitlines()[-1])
        """,
        tmp_path,
    )
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout.startswith(
        f"survived: RuntimeError: executable {str(exe)!r} exited with status 0 without running"
    )


def test_wrapper_that_runs_python_is_a_fine_executable(tmp_path: Path) -> None:
    exe = _write(tmp_path / "wrapper", f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    exe.chmod(0o755)
    assert _spawn(rt.identity, "wrapped", nprocs=2, executable=str(exe)) == ["wrapped"] * 2


def test_executable_that_cannot_be_executed_is_a_launch_error(tmp_path: Path) -> None:
    # Passes every check before exec: only exec() itself finds out (no #! line, no ELF).
    exe = tmp_path / "python"
    exe.write_bytes(b"\x00\x01 not a program")
    exe.chmod(0o755)
    fds = _fd_count()
    with pytest.raises(spawnkit.LaunchError) as info:
        _spawn(rt.identity, 1, nprocs=2, executable=str(exe))
    assert f"cannot start rank 0 with executable {str(exe)!r}" in str(info.value)
    assert _fd_count() == fds


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"executable": 3}, spawnkit.InvalidArgumentError, "executable must be a path"),
        ({"interpreter_args": "-X dev"}, spawnkit.InvalidArgumentError, "must be a list of str"),
        ({"interpreter_args": ["-X", 1]}, spawnkit.InvalidArgumentError, "items must be str"),
        ({"interpreter_args": ["-m", "x"]}, spawnkit.ConfigError, "may not contain '-m'"),
        ({"cwd": 1.5}, spawnkit.InvalidArgumentError, "cwd must be a directory path"),
        ({"cwd": "/no/such/dir"}, spawnkit.ConfigError, "is not an existing directory"),
    ],
)
def test_bad_options_are_rejected_before_anything_starts(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        _spawn(rt.identity, 1, **options)
    assert str(info.value).startswith("backend 'subprocess': ")


def test_env_callable_returning_garbage_is_refused_before_any_process_starts(
    tmp_path: Path,
) -> None:
    def env(rank: int) -> Any:
        return {"OK": "1"} if rank == 0 else "A=1"

    with pytest.raises(spawnkit.InvalidArgumentError, match=r"env\(1\) must be a mapping"):
        _spawn(rt.touch, str(tmp_path), nprocs=2, env=env)
    assert list(tmp_path.iterdir()) == []


# -- without a pidfd ------------------------------------------------------------------------


def test_without_pidfd_a_thread_reaps_and_signals_the_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_fresh, "open_pidfd", lambda pid: None)
    before = threading.active_count()
    assert _spawn(rt.identity, "ok", nprocs=2) == ["ok", "ok"]
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        _spawn(rt.exit_with, 3)
    assert info.value.exit_code == 3
    ctx = spawnkit.spawn(
        rt.ready_then_block, args=(str(tmp_path), "x"), nprocs=2, join=False, backend=BACKEND
    )
    wait_for_files(tmp_path / "0.ready")
    wait_for_files(tmp_path / "1.ready")
    ctx.terminate()
    with pytest.raises(spawnkit.JobTerminatedError):
        ctx.join()
    assert threading.active_count() == before
