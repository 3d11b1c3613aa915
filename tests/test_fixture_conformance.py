"""The fixture plugin passes the conformance kit, run as docs/plugins.md says, in the tiers
its backend's own code can break: the full kit runs on every built-in backend already. And
how the kit chooses: tiers by name, watches on the backends that need them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from spawnkit.testing import BackendSuite
from spawnkit.testing._suite import _backend_watch_params, backend_params, watch_params
from spawnkit.testing._tiers import PARTS, tier_of

SHELL = "/bin/sh"  # the backend's `shell` option, given as a remote engine's address would be


class TestShellwrap(BackendSuite):
    backends = ("shellwrap",)
    # Its own code starts each rank through a shell that execs Python, hands it the spec on
    # stdin, passes descriptors, and reaps it behind a sentinel: the start and the results,
    # the stop that must reach the exec'd Python, the descriptors and processes it must
    # give back, the pid, group and exit status the exec must keep, the descriptors and the
    # main module it forwards. How a failure is told (the traceback, the pickling) and what
    # a worker does once running (SIGTERM handling, parent watches) are core's, which the
    # full kit proves on the built-in backends.
    backend_options: ClassVar[dict[str, str]] = {"shell": SHELL}
    tiers = (
        "starting and results",
        "stopping",
        "resources",
        "pids and process groups",
        "pids and sentinels",
        "pids and signals",
        "exit signals",
        "os._exit status",
        "descriptors in the arguments",
        "the result descriptor",
        "per-rank output at the descriptor level",
        "the main module imported by each worker",
    )


def test_a_misspelt_tier_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(
        "from spawnkit.testing import BackendSuite\n"
        "class TestMine(BackendSuite):\n"
        "    backends = ('fork',)\n"
        "    tiers = ('universal', 'process group')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    assert "TestMine.tiers: 'process group' is no tier of the kit" in proc.stdout
    assert "'process groups'" in proc.stdout  # the tiers it could have meant


def _run_suite(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_mine.py").write_text(
        f"from spawnkit.testing import BackendSuite\nclass TestMine(BackendSuite):\n{body}"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_backend_options_reach_the_backend(tmp_path: Path) -> None:
    proc = _run_suite(
        tmp_path,
        "    backends = ('shellwrap',)\n    backend_options = {'shell': '/no/such/shell'}\n",
        "-k",
        "test_returns_every_rank_value_in_rank_order",
    )
    assert proc.returncode == 1, proc.stdout
    assert "backend 'shellwrap' failed a two-rank job of no work" in proc.stdout
    assert "/no/such/shell" in proc.stdout


def test_a_backend_option_a_script_cannot_read_back_is_refused_by_name(tmp_path: Path) -> None:
    proc = _run_suite(
        tmp_path,
        "    backends = ('fork',)\n    backend_options = {'engine': object()}\n",
        "--collect-only",
    )
    assert proc.returncode != 0, proc.stdout
    assert "TestMine.backend_options: engine=<object object at" in proc.stdout
    assert "is no Python literal" in proc.stdout


def test_every_universal_check_names_its_part() -> None:
    # A suite that lists parts would skip a check in none of them without a word.
    checks = [name for name in dir(BackendSuite) if name.startswith("test_")]
    assert checks
    unnamed = [name for name in checks if tier_of(getattr(BackendSuite, name)) == ("universal", "")]
    assert unnamed == []
    assert {tier_of(getattr(BackendSuite, name))[1] for name in checks} >= set(PARTS)


def _pairs(params: list[Any]) -> list[tuple[str, str]]:
    return [(param.values[0], param.values[1]) for param in params if not param.marks]


def test_every_backend_runs_its_default_watch_and_every_watch_runs_on_the_hosts() -> None:
    backends = backend_params(("fork", "spawn", "subprocess"))
    watches = [p.values[0] for p in watch_params() if not p.marks and p.values[0] != "auto"]
    got = _pairs(_backend_watch_params(backends, ("spawn", "forkserver")))
    # forkserver is not among this suite's backends: spawn alone runs every watch.
    assert got == [
        ("fork", "auto"),
        ("spawn", "auto"),
        ("subprocess", "auto"),
        *[("spawn", watch) for watch in watches],
    ]
    # Without hosts, or with none of them running here: the first backend that runs.
    missing = backend_params(("notinstalled", "fork"))
    assert _pairs(_backend_watch_params(missing, None)) == [
        ("fork", "auto"),
        *[("fork", watch) for watch in watches],
    ]
