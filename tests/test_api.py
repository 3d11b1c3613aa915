"""The public API outside any one backend: bad input, the exception tree, listings, layout."""

from __future__ import annotations

import ast
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import spawnkit
import spawnkit.plugin
from spawnkit.testing import _targets as t
from spawnkit.testing._behaviour import _run_script
from spawnkit.testing._processes import descendants

CHECKOUT = Path(__file__).resolve().parents[1]


def _in_checkout(path: str) -> bool:
    return Path(path).resolve().is_relative_to(CHECKOUT)


def test_nprocs_below_one() -> None:
    with pytest.raises(spawnkit.ConfigError, match=r"nprocs must be >= 1, not 0"):
        spawnkit.spawn(t.times, args=(1,), nprocs=0)


@pytest.mark.parametrize("nprocs", ["2", 2.0, True, None])
def test_nprocs_not_an_int(nprocs: object) -> None:
    with pytest.raises(spawnkit.InvalidArgumentError, match=r"nprocs must be an int >= 1"):
        spawnkit.spawn(t.times, args=(1,), nprocs=nprocs)  # type: ignore[arg-type]


def test_fn_not_callable() -> None:
    with pytest.raises(
        spawnkit.InvalidArgumentError, match=r"fn must be callable as fn\(rank, \*args\), not 42"
    ):
        spawnkit.spawn(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", ["abc", 5, {"a": 1}])
def test_args_not_a_sequence(args: object) -> None:
    with pytest.raises(
        spawnkit.InvalidArgumentError, match=r"for one argument write args=\(value,\)"
    ):
        spawnkit.spawn(t.times, args=args)  # type: ignore[arg-type]


def test_negative_grace_period() -> None:
    with pytest.raises(spawnkit.ConfigError, match=r"grace_period must be >= 0 seconds, not -1"):
        spawnkit.spawn(t.times, args=(1,), grace_period=-1)


def test_negative_join_timeout_and_grace() -> None:
    with spawnkit.spawn(t.block, join=False, backend="fork") as ctx:
        # A negative timeout looks once, as torch's join(-1) (see test_torch_compat).
        assert ctx.join(timeout=-0.5) is False
        with pytest.raises(spawnkit.InvalidArgumentError, match=r"grace_period must be a number"):
            ctx.join(grace_period="5")  # type: ignore[arg-type]


def test_unknown_backend_lists_the_installed_ones() -> None:
    with pytest.raises(spawnkit.UnknownBackendError) as info:
        spawnkit.spawn(t.times, args=(1,), backend="forkserve")
    assert isinstance(info.value, LookupError)
    from spawnkit._registry import plugins

    # Every registered backend, also one that cannot run here (it says why when named).
    installed = ", ".join(repr(n) for n in sorted(plugins().backends))
    assert str(info.value).startswith(
        f"unknown backend 'forkserve' (did you mean 'forkserver'?); installed: {installed}"
    )


def test_unknown_watch() -> None:
    with pytest.raises(
        spawnkit.UnknownWatchError, match=r"unknown watch 'pidf' \(did you mean 'pidfd'\?\)"
    ):
        spawnkit.spawn(t.times, args=(1,), watch="pidf")


def test_unknown_option_lists_the_accepted_ones() -> None:
    with pytest.raises(
        spawnkit.UnknownOptionError,
        match=r"^backend 'spawn' does not take option\(s\) colour, size; it accepts: none$",
    ):
        spawnkit.spawn(t.times, args=(1,), backend="spawn", size=1, colour="red")


def test_unpicklable_argument_is_named_with_the_fix() -> None:
    lock = threading.Lock()
    with pytest.raises(spawnkit.NotPicklableError) as info:
        spawnkit.spawn(t.echo, args=(1, lock), backend="spawn")
    message = str(info.value)
    assert message.startswith("cannot pickle args[1] <unlocked _thread.lock object")
    assert "for backend 'spawn'" in message
    assert message.endswith("; fixes: use a backend that does not pickle: 'fork'")
    assert isinstance(info.value, TypeError)


def test_a_function_a_new_interpreter_cannot_import_names_the_fixes(tmp_path: Path) -> None:
    # Without cloudpickle's help (it is hidden here), a nested function cannot travel.
    code = (
        "import sys; sys.modules['cloudpickle'] = None\n"
        "import spawnkit\n"
        "def outer():\n"
        "    def nested(rank): return rank\n"
        "    return nested\n"
        "try:\n"
        "    spawnkit.spawn(outer(), backend='spawn')\n"
        "except spawnkit.NotPicklableError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    ).stdout
    assert "outer.<locals>.nested" in out
    assert 'install cloudpickle (pip install "spawnkit[cloudpickle]")' in out
    assert "use a backend that does not pickle: 'fork'" in out


def test_bad_input_starts_no_process() -> None:
    before = set(descendants())
    for bad in ({"nprocs": 0}, {"backend": "nope"}, {"args": "x"}, {"backend": "spawn", "x": 1}):
        with pytest.raises(spawnkit.ConfigError):
            spawnkit.spawn(t.times, **{"args": (1,), **bad})  # type: ignore[arg-type]
    assert set(descendants()) == before


def test_default_backend_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a fork worker has the parent's spawnkit._api loaded: that tells the backend.
    monkeypatch.setenv("SPAWNKIT_BACKEND", "fork")
    (modules,) = spawnkit.spawn(t.loaded_modules)
    assert "spawnkit._api" in modules
    monkeypatch.delenv("SPAWNKIT_BACKEND")
    (modules,) = spawnkit.spawn(t.loaded_modules)
    assert "spawnkit._api" not in modules


def test_start_processes_names_the_backend_start_method() -> None:
    assert spawnkit.start_processes(t.times, args=(2,), nprocs=2, start_method="fork") == [0, 2]
    ctx = spawnkit.start_processes(
        t.times, args=(2,), nprocs=1, join=False, start_method="forkserver"
    )
    assert isinstance(ctx, spawnkit.ProcessContext)
    assert ctx.results() == [0]


def test_available_backends_and_watches() -> None:
    assert {"fork", "forkserver", "spawn"} <= set(spawnkit.available_backends())
    assert {"none", "pipe"} <= set(spawnkit.available_watches())


def test_process_context_satisfies_the_protocol() -> None:
    with spawnkit.spawn(t.times, args=(1,), join=False, backend="fork") as ctx:
        assert isinstance(ctx, spawnkit.SpawnContext)
        assert all(isinstance(h, spawnkit.plugin.WorkerHandle) for h in ctx.handles)
        ctx.join()


# -- the exception tree -------------------------------------------------------------------


def test_everything_derives_from_spawn_error() -> None:
    for name in spawnkit.__all__:
        obj = getattr(spawnkit, name)
        # RemoteTraceback and Terminated are never raised in the parent: they live in workers.
        if (
            isinstance(obj, type)
            and issubclass(obj, BaseException)
            and obj not in (spawnkit.RemoteTraceback, spawnkit.Terminated)
        ):
            assert issubclass(obj, spawnkit.SpawnError), name


@pytest.mark.parametrize(
    "exc",
    [
        spawnkit.ProcessException("m", 2, 99),
        spawnkit.ProcessRaisedException(
            "m", 1, 42, "Traceback...\nValueError: x\n", ValueError("x")
        ),
        spawnkit.ProcessExitedException(
            "process 3 terminated with signal SIGKILL", 3, 7, -9, "SIGKILL"
        ),
        spawnkit.BackendUnavailableError("no", backend="fork", reason="windows"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_exceptions_pickle_with_their_fields(exc: Exception) -> None:
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc)
    assert str(again) == str(exc)
    fields = {k: v for k, v in vars(exc).items() if k not in ("exception", "failures")}
    assert {k: v for k, v in vars(again).items() if k in fields} == fields


def test_torch_style_fields() -> None:
    exc = spawnkit.ProcessExitedException("process 0 terminated with exit code 3", 0, 1234, 3)
    assert (exc.error_index, exc.pid, exc.error_pid, exc.exit_code, exc.signal_name) == (
        0,
        1234,
        1234,
        3,
        None,
    )
    assert exc.failures == [exc]


# -- layout and laziness ------------------------------------------------------------------


def test_core_never_imports_the_builtin_backends() -> None:
    # Built-ins register as any plugin does. The one mention of them in core is where the
    # plugin API's old name for FreshInterpreterBackend now points, loaded only on its use.
    root = Path(spawnkit.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                modules = [node.value]  # a name import_module() would load
            else:
                continue
            found += [(path.name, m) for m in modules if m.split(".")[0] == "spawnkit_backends"]
    assert found == [("plugin.py", "spawnkit_backends")]


def test_importing_spawnkit_loads_no_plugin_machinery(tmp_path: Path) -> None:
    code = (
        "import sys, spawnkit, spawnkit._child\n"
        "prefixes = ('pluggy', 'importlib.metadata', 'spawnkit')\n"
        "print(sorted(m for m in sys.modules if m.startswith(prefixes)))"
    )
    # In tmp_path: `-c` puts the working directory on sys.path, and tox's (the checkout's
    # root) would import the source tree instead of the installed wheel.
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "pluggy" not in out
    assert "importlib.metadata" not in out
    assert "spawnkit._registry" not in out


def test_scripts_the_kit_starts_import_the_installed_spawnkit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tox runs the suite from the checkout's root against the wheel it built; a `-c` script
    # started there would find ./spawnkit first on sys.path and test the source tree instead.
    if _in_checkout(spawnkit.__file__):
        pytest.skip(
            f"spawnkit is imported from the checkout ({spawnkit.__file__}), not from an "
            "installed wheel: run the suite through tox (or a non-editable install)"
        )
    monkeypatch.chdir(CHECKOUT)  # where tox runs it, wherever this run was started
    out = _run_script("import spawnkit; print(spawnkit.__file__)")
    child = Path(out.strip()).resolve()
    assert not _in_checkout(str(child)), child
    assert child == Path(spawnkit.__file__).resolve()


def test_version_comes_from_package_metadata() -> None:
    from importlib.metadata import version

    assert spawnkit.__version__ == version("spawnkit")


# -- robustness ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_seconds_are_refused(value: float) -> None:
    refused = r"finite number of seconds|>= 0 seconds"
    with pytest.raises(spawnkit.ConfigError, match=refused):
        spawnkit.spawn(t.times, args=(1,), grace_period=value)
    ctx = spawnkit.spawn(t.block, join=False, backend="fork")
    try:
        with pytest.raises(spawnkit.ConfigError, match=refused):
            ctx.join(timeout=value)
    finally:
        ctx.terminate()


def test_start_method_is_torchs_name_for_backend() -> None:
    # Only a fork worker has the parent's spawnkit._api loaded: that tells the backend.
    (modules,) = spawnkit.spawn(t.loaded_modules, start_method="fork")
    assert "spawnkit._api" in modules
    with pytest.raises(spawnkit.ConfigError, match="disagree"):
        spawnkit.spawn(t.times, args=(1,), backend="spawn", start_method="fork")


def _wait_until_ended(ctx: spawnkit.ProcessContext, rank: int) -> None:
    deadline = time.monotonic() + 30
    while ctx._ranks[rank].status is None:
        assert time.monotonic() < deadline, f"rank {rank} never ended"
        assert ctx.join(timeout=0.01) is False


def test_a_finished_rank_never_closes_a_descriptor_twice() -> None:
    ctx = spawnkit.spawn(t.finish_unless, args=(1,), nprocs=2, join=False, backend="fork")
    _wait_until_ended(ctx, 0)  # rank 0's result pipe is closed: its number is free again
    with open(os.devnull, "rb") as mine:
        ctx.terminate()
        os.fstat(mine.fileno())  # EBADF if the job closed it a second time


def test_terminate_from_another_thread_while_join_waits() -> None:
    ctx = spawnkit.spawn(t.block, nprocs=2, join=False, backend="fork")
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            ctx.join()
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    ctx.terminate(grace_period=5)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert [type(e) for e in outcome] == [spawnkit.JobTerminatedError]


def test_terminate_keeps_a_failure_that_already_happened() -> None:
    ctx = spawnkit.spawn(t.raise_on, args=(0, "first"), nprocs=2, join=False, backend="fork")
    # Wait until rank 0 raised and exited, without reaping it: nobody has looked yet. Under
    # load it can exit before rank 1 starts, and multiprocessing reaps finished children when
    # it starts the next one: then it has exited already, and the job still has to look.
    try:
        os.waitid(os.P_PID, ctx.pids()[0], os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    ctx.terminate()
    with pytest.raises(spawnkit.ProcessRaisedException, match="first"):
        ctx.join()


def test_a_lost_fork_server_does_not_pass_for_ended_workers() -> None:
    from spawnkit.testing._processes import wait_gone
    from spawnkit_backends._fork_server import server_pids

    ctx = spawnkit.spawn(t.block, nprocs=2, join=False, backend="forkserver")
    pids = ctx.pids()
    (server,) = server_pids()
    os.kill(server, signal.SIGKILL)
    try:
        # The server's end of every rank's status socket is gone, but the ranks still run.
        assert ctx.join(timeout=0.5) is False
    finally:
        ctx.terminate(grace_period=5)
    assert wait_gone(pids, timeout=10) == set()
    # The next job starts a new server, and the dead one is reaped.
    assert spawnkit.spawn(t.times, args=(2,), nprocs=1, backend="forkserver") == [0]
    assert server not in server_pids()
    assert wait_gone([server], timeout=0) == set()
