"""With torch loaded, a job's failure is torch's exception too (tox -e torch).

``torch.distributed.elastic`` turns ``torch.multiprocessing``'s exceptions into its
``ChildFailedError``; accelerate and Lightning catch them around their launchers. Code
written for spawnkit keeps catching spawnkit's names.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import spawnkit
from spawnkit.testing import _targets as t

torch = pytest.importorskip(
    "torch", reason="torch is not installed (tox -e torch installs its CPU build where it can)"
)
import torch.multiprocessing as tmp  # noqa: E402 - only once torch is known to be there

# The module: torch.multiprocessing re-exports two of its three exceptions, and its name
# `spawn` there is the function.
torch_spawn = importlib.import_module("torch.multiprocessing.spawn")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _torch_compat_targets as tt  # noqa: E402

BACKENDS = ["fork", "spawn", "forkserver", "subprocess"]
# Far above what a short program here needs on a loaded machine: past it, it hangs.
PROGRAM_WAIT = 60.0


def _env() -> dict[str, str]:
    tests = str(Path(__file__).resolve().parent.parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raised_failure_is_caught_as_torch_s_and_as_spawnkit_s(backend: str) -> None:
    with pytest.raises(tmp.ProcessRaisedException) as info:
        spawnkit.spawn(tt.raise_or_block, nprocs=2, backend=backend)
    exc = info.value
    assert isinstance(exc, spawnkit.ProcessRaisedException)
    assert isinstance(exc, torch_spawn.ProcessException)
    assert isinstance(exc, spawnkit.SpawnError)
    assert (type(exc).__name__, type(exc).__module__) == ("ProcessRaisedException", "spawnkit")
    # What torch's join would have raised for the same failure, field by field.
    theirs = tmp.ProcessRaisedException(exc.msg, 0, exc.pid)
    assert (exc.args, exc.msg, exc.error_index, exc.error_pid) == (
        theirs.args,
        theirs.msg,
        theirs.error_index,
        theirs.error_pid,
    )
    assert str(exc) == str(theirs)
    assert isinstance(exc.__cause__, ValueError)


def test_an_exit_is_caught_as_torch_s_with_torch_s_fields() -> None:
    with pytest.raises(tmp.ProcessExitedException) as info:
        spawnkit.spawn(t.exit_unless, args=(3,), nprocs=1, backend="fork")
    exc = info.value
    assert isinstance(exc, spawnkit.ProcessExitedException)
    theirs = tmp.ProcessExitedException(exc.msg, 0, exc.pid, 3)
    fields = ("args", "msg", "error_index", "error_pid", "exit_code", "signal_name")
    assert [getattr(exc, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert str(exc) == str(theirs) == "process 0 terminated with exit code 3"


def test_torch_s_flavour_survives_a_pickle_roundtrip_and_names_no_torch_class() -> None:
    exited = spawnkit.ProcessExitedException(
        "process 1 terminated with signal SIGKILL", 1, 42, -9, "SIGKILL"
    )
    raised = spawnkit.ProcessRaisedException("boom", 2, 43, "Traceback...", ValueError("x"))
    for exc in (exited, raised):
        data = pickle.dumps(exc)
        assert b"torch" not in data
        again = pickle.loads(data)
        assert type(again) is type(exc)
        assert isinstance(again, torch_spawn.ProcessException)
        assert (again.args, again.msg, again.error_index, again.error_pid) == (
            exc.args,
            exc.msg,
            exc.error_index,
            exc.error_pid,
        )
    again = pickle.loads(pickle.dumps(exited))
    assert (again.exit_code, again.signal_name) == (-9, "SIGKILL")
    again = pickle.loads(pickle.dumps(raised))
    assert (again.remote_traceback, type(again.exception)) == ("Traceback...", ValueError)


def test_it_unpickles_as_spawnkit_s_class_where_torch_is_not_loaded() -> None:
    data = pickle.dumps(spawnkit.ProcessExitedException("gone", 1, 42, 3))
    program = (
        "import pickle, sys, spawnkit\n"
        "exc = pickle.loads(sys.stdin.buffer.read())\n"
        "print(type(exc) is spawnkit.ProcessExitedException, exc.exit_code,\n"
        "      'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        input=data,
        capture_output=True,
        timeout=PROGRAM_WAIT,
        check=True,
    )
    assert result.stdout.decode() == "True 3 False\n"


def test_a_cpu_torch_lets_the_fork_backend_run() -> None:
    tensor = torch.zeros(2)
    tensor += 1  # torch is in use in the parent, without CUDA
    assert not torch.cuda.is_initialized()
    assert spawnkit.spawn(abs, nprocs=2, backend="fork") == [0, 1]
