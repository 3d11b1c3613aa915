"""Conformance tests for the parent watch: a job killed with SIGKILL leaves nothing behind.

Every scenario runs in a harness process (:mod:`spawnkit.testing._death_harness`) that
adopts orphans as a subreaper, so what outlives the job is seen, and killed, however deep
it hides. The job's process is a fresh interpreter in a session of its own.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from ._behaviour import Checks
from ._death_harness import run_harness
from ._tiers import local_process_tests

__all__ = ["ParentDeathTests", "resolve_watch"]

posix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="the parent-death harness is POSIX (Windows: jobobject tests)"
)


def resolve_watch(watch: str, backend: str | None = None) -> str:
    """The watch ``watch`` stands for here (``"auto"`` resolved, for ``backend`` if given)."""
    from .._registry import plugins

    registry = plugins()
    info = None if backend is None else registry.backends[backend]
    return registry.watch(watch, info).name


def _explain(result: dict[str, Any]) -> str:
    shown = {k: v for k, v in result.items() if k not in ("output", "config")}
    return f"\n{json.dumps(shown, indent=1)}\n-- the job's output --\n{result.get('output', '')}"


def _played(result: dict[str, Any]) -> dict[str, Any]:
    assert result["error"] is None, f"the scenario could not be played: {_explain(result)}"
    return result


def _families(result: dict[str, Any]) -> dict[int, list[int]]:
    """Worker pid -> its grandchildren's pids, from the ``armed`` reports."""
    return {e["pid"]: e["children"] for e in result["events"] if e["event"] == "armed"}


def _everyone(family: dict[int, list[int]]) -> list[int]:
    return [*family, *(child for children in family.values() for child in children)]


def _cleaned_up(result: dict[str, Any]) -> set[int]:
    return {e["pid"] for e in result["events"] if e["event"] == "cleanup"}


def _assert_all_gone(result: dict[str, Any]) -> None:
    assert result["remaining"] == [], f"outlived the job: {_explain(result)}"
    assert result.get("strays", []) == [], f"left behind: {_explain(result)}"


@local_process_tests("parent watches")
class ParentDeathTests(Checks):
    """Parent-death tests, run for every backend and every watch variant this machine has.

    Each test carries its own platform mark: a mark on this class would reach every other
    test of a suite that inherits from it.
    """

    @pytest.fixture(autouse=True)
    def _watch_applies(self, request: pytest.FixtureRequest) -> None:
        """A watch the backend says cannot guard its workers is skipped, not failed."""
        from .._registry import plugins

        params = getattr(getattr(request.node, "callspec", None), "params", {})
        backend, watch = params.get("backend"), params.get("watch")
        if not isinstance(backend, str) or not isinstance(watch, str) or watch == "auto":
            return
        info = plugins().backends.get(backend)
        if info is not None and not info.allows_watch(watch):
            pytest.skip(f"backend {backend!r} says watch {watch!r} cannot guard its workers")

    @posix_only
    def test_parent_death_stops_workers_and_grandchildren(
        self, backend: str, watch: str, tmp_path: Path
    ) -> None:
        resolved = resolve_watch(watch, backend)
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": watch,
            "nprocs": 2,
            "tag": "job",
        }
        if resolved == "none":
            # The one variant without a watch: its workers outlive the job, as documented.
            result = _played(run_harness(tmp_path, [job], children=1, survive=["job"]))
            assert result["alive"] == sorted(_everyone(_families(result))), _explain(result)
            return
        result = _played(run_harness(tmp_path, [job], children=1))
        _assert_all_gone(result)
        family = _families(result)
        # SIGTERM came first: every worker and every grandchild ran its cleanup.
        assert _cleaned_up(result) == set(_everyone(family)), _explain(result)

    @posix_only
    def test_parent_death_before_the_watch_is_armed(
        self, backend: str, watch: str, tmp_path: Path
    ) -> None:
        if resolve_watch(watch, backend) == "none":
            pytest.skip("watch 'none' arms nothing")
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": watch,
            "nprocs": 1,
        }
        result = _played(run_harness(tmp_path, [job], hold=True))
        _assert_all_gone(result)
        # arm() itself found the parent gone: fn never ran.
        assert not [e for e in result["events"] if e["event"] == "armed"], _explain(result)

    @posix_only
    def test_spawning_from_a_thread_that_exits_keeps_the_workers(
        self, backend: str, watch: str, tmp_path: Path
    ) -> None:
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": watch,
            "nprocs": 1,
        }
        result = _played(run_harness(tmp_path, [job], mode="thread"))
        assert result["parent_returncode"] == 0, _explain(result)
        # Every worker finished its work and returned: none was stopped on the way.
        (results,) = [e["results"] for e in result["events"] if e["event"] == "results"]
        assert [sorted(pids) for pids in results] == [sorted(_families(result))], _explain(result)
        assert not _cleaned_up(result), _explain(result)

    @posix_only
    def test_parent_death_kills_what_ignores_or_outlasts_sigterm(
        self, backend: str, tmp_path: Path
    ) -> None:
        # What happens after the watch fired is the same for every watch: "auto" will do.
        # Rank 0 dies of SIGTERM at once, rank 1 ignores it, rank 2 catches it and returns;
        # each leaves a grandchild that ignores SIGTERM. Only the grace period's SIGKILL,
        # sent by someone who outlives rank 0 and rank 2, can end those grandchildren.
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": "auto",
            "nprocs": 3,
        }
        result = _played(
            run_harness(
                tmp_path,
                [job],
                children=1,
                child_sigterm="ignore",
                sigterm=["default", "ignore", "catch"],
            )
        )
        _assert_all_gone(result)

    @posix_only
    def test_sigint_to_a_foreground_job_stops_it_gracefully(
        self, backend: str, tmp_path: Path
    ) -> None:
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": "auto",
            "nprocs": 2,
        }
        result = _played(run_harness(tmp_path, [job], mode="signal", signal="SIGINT", children=1))
        _assert_all_gone(result)
        family = _families(result)
        assert set(family) <= _cleaned_up(result), _explain(result)
        (interrupted,) = [e for e in result["events"] if e["event"] == "interrupted"]
        assert interrupted["sigint_restored"], _explain(result)
        assert interrupted["sigterm_restored"], _explain(result)
        assert interrupted["live_children"] == [], _explain(result)
        # KeyboardInterrupt left the interpreter, which then ends by SIGINT, as Python does.
        assert result["parent_returncode"] == -signal.SIGINT, _explain(result)

    @posix_only
    def test_sigterm_to_a_foreground_job_stops_it_then_ends_the_parent(
        self, backend: str, tmp_path: Path
    ) -> None:
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": "auto",
            "nprocs": 2,
        }
        result = _played(run_harness(tmp_path, [job], mode="signal", signal="SIGTERM"))
        _assert_all_gone(result)
        assert set(_families(result)) <= _cleaned_up(result), _explain(result)
        assert result["parent_returncode"] == -signal.SIGTERM, _explain(result)

    @posix_only
    def test_sigterm_reaches_the_parents_own_handler_after_the_stop(
        self, backend: str, tmp_path: Path
    ) -> None:
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": "auto",
            "nprocs": 2,
        }
        result = _played(
            run_harness(tmp_path, [job], mode="signal", signal="SIGTERM", parent_handler=True)
        )
        _assert_all_gone(result)
        (handled,) = [e for e in result["events"] if e["event"] == "parent-handler"]
        assert handled["live_children"] == [], _explain(result)
        assert result["parent_returncode"] == 7, _explain(result)

    @posix_only
    def test_ctrl_c_to_spawnkit_run_leaves_nothing_and_exits_130(
        self, backend: str, tmp_path: Path
    ) -> None:
        if self.backend_options:
            pytest.skip("`spawnkit run` passes no backend options; this suite gives some")
        job = {
            "backend": backend,
            "options": dict(self.backend_options),
            "watch": "auto",
            "nprocs": 2,
        }
        result = _played(run_harness(tmp_path, [job], mode="cli", signal="SIGINT", children=1))
        _assert_all_gone(result)
        assert set(_families(result)) <= _cleaned_up(result), _explain(result)
        assert result["parent_returncode"] == 130, _explain(result)
