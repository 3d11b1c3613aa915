"""The suite class and its parametrization: what ``spawnkit.testing`` exports."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from ._behaviour import BehaviourTests
from ._parent_death import ParentDeathTests
from ._probe import probe
from ._processes import descendants, leak_guard
from ._robustness import DropInTests, RobustnessTests
from ._tiers import tier_of

__all__ = ["BackendSuite", "backend_params", "descendants", "leak_guard", "watch_params"]

TEST_BACKENDS_ENV = "SPAWNKIT_TEST_BACKENDS"


def backend_params(
    names: Sequence[str] | None = None,
    test: object = None,
    opted_in: Collection[str] = (),
) -> list[Any]:
    """``pytest.param`` per backend: the named ones, or every registered one.

    An unavailable backend is kept, marked to skip with the reason it gave. With ``test``,
    a check outside the backend's tiers is kept too, marked to skip saying why (see
    :mod:`spawnkit.testing._tiers`); ``opted_in`` lists the opt-in checks a remote backend
    runs.
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
        elif info.remote:
            tier, what = tier_of(test)
            if tier == "local":
                marks.append(
                    pytest.mark.skip(
                        reason=f"a local-process check ({what}); backend {name!r} runs its "
                        "workers outside this machine's process tree"
                    )
                )
            elif tier == "opt_in" and what not in opted_in:
                marks.append(
                    pytest.mark.skip(
                        reason=f"an opt-in check ({what}) that backend {name!r}'s suite does "
                        "not list in opt_in"
                    )
                )
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
    #: Opt-in checks a remote backend passes (see spawnkit.testing._tiers); local backends
    #: run them all.
    opt_in: ClassVar[Collection[str]] = ()
    # A broken backend hangs rather than fails: bound every test even where the author's
    # project configures no timeout.
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.timeout(120)]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "backend" in metafunc.fixturenames:
            metafunc.parametrize(
                "backend", backend_params(self.backends, metafunc.function, self.opt_in)
            )
        if "watch" in metafunc.fixturenames:
            metafunc.parametrize("watch", watch_params())

    @pytest.fixture(autouse=True)
    def _no_leaks(self, request: pytest.FixtureRequest) -> Iterator[None]:
        """Every conformance test fails if it leaves a process behind, and fails at once
        for a backend that cannot finish a tiny job (see :mod:`spawnkit.testing._probe`)."""
        backend = getattr(getattr(request.node, "callspec", None), "params", {}).get("backend")
        if isinstance(backend, str):
            broken = probe(backend)
            if broken is not None:
                pytest.fail(broken, pytrace=False)
        with leak_guard():
            yield
