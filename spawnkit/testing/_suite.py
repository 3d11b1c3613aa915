"""The suite class and its parametrization: what ``spawnkit.testing`` exports."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from ._behaviour import BehaviourTests
from ._parent_death import ParentDeathTests
from ._processes import descendants, leak_guard
from ._robustness import DropInTests, RobustnessTests

__all__ = ["BackendSuite", "backend_params", "descendants", "leak_guard", "watch_params"]

TEST_BACKENDS_ENV = "SPAWNKIT_TEST_BACKENDS"


def backend_params(names: Sequence[str] | None = None) -> list[Any]:
    """``pytest.param`` per backend: the named ones, or every registered one.

    An unavailable backend is kept, marked to skip with the reason it gave.
    """
    from .._registry import plugins

    registry = plugins()
    chosen = list(names) if names is not None else sorted(registry.backends)
    narrowed = os.environ.get(TEST_BACKENDS_ENV, "").strip()
    if narrowed:
        wanted = [n.strip() for n in narrowed.split(",") if n.strip()]
        chosen = [n for n in chosen if n in wanted]
    params = []
    for name in chosen:
        info = registry.backends.get(name)
        marks = []
        if info is None:
            marks.append(pytest.mark.skip(reason=f"backend {name!r} is not installed"))
        elif info.unavailable is not None:
            marks.append(pytest.mark.skip(reason=f"backend {name!r}: {info.unavailable}"))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def watch_params() -> list[Any]:
    """``pytest.param`` per registered parent watch, plus ``auto``."""
    from .._registry import plugins

    registry = plugins()
    params = [pytest.param("auto", id="auto")]
    for name, info in sorted(registry.watches.items()):
        marks = []
        if info.unavailable is not None:
            marks.append(pytest.mark.skip(reason=f"watch {name!r}: {info.unavailable}"))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


class BackendSuite(BehaviourTests, RobustnessTests, DropInTests, ParentDeathTests):
    """Subclass in a test module to run every conformance test against ``backends``."""

    backends: ClassVar[Sequence[str] | None] = None
    # A broken backend hangs rather than fails: bound every test even where the author's
    # project configures no timeout.
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.timeout(120)]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "backend" in metafunc.fixturenames:
            metafunc.parametrize("backend", backend_params(self.backends))
        if "watch" in metafunc.fixturenames:
            metafunc.parametrize("watch", watch_params())

    @pytest.fixture(autouse=True)
    def _no_leaks(self) -> Iterator[None]:
        """Every conformance test fails if it leaves a process behind."""
        with leak_guard():
            yield
