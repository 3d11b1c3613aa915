"""The suite class and its parametrization: what ``spawnkit.testing`` exports."""

from __future__ import annotations

import ast
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

import spawnkit

from ._behaviour import BehaviourTests
from ._parent_death import ParentDeathTests
from ._probe import probe
from ._processes import descendants, leak_guard
from ._robustness import DropInTests, RobustnessTests
from ._tiers import OPT_IN, PARTS, tier_of

__all__ = ["BackendSuite", "backend_params", "descendants", "leak_guard", "watch_params"]

TEST_BACKENDS_ENV = "SPAWNKIT_TEST_BACKENDS"


def _tier_name(test: object) -> str:
    """The name a suite's ``tiers`` lists ``test``'s tier by: a part of the universal tier
    (``"failures"``), a local-process tier's (``"process groups"``) or an opt-in capability
    (``"exit signals"``); ``"universal"`` for a universal check in no part."""
    tier, what = tier_of(test)
    return what if what else tier


def _selected(test: object, tiers: Collection[str]) -> bool:
    """Whether ``tiers`` runs ``test``: by its own name, or as a universal check when
    ``tiers`` lists ``"universal"``, which names every part of that tier."""
    return _tier_name(test) in tiers or (tier_of(test)[0] == "universal" and "universal" in tiers)


def backend_params(
    names: Sequence[str] | None = None,
    test: object = None,
    opted_in: Collection[str] = (),
    tiers: Collection[str] | None = None,
) -> list[Any]:
    """``pytest.param`` per backend: the named ones, or every registered one.

    An unavailable backend is kept, marked to skip with the reason it gave. With ``test``,
    a check outside the backend's tiers is kept too, marked to skip saying why (see
    :mod:`spawnkit.testing._tiers`); ``opted_in`` lists the opt-in checks a remote backend
    runs; ``tiers``, if given, the only tiers to run (by :func:`_tier_name`).
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
        if test is not None and tiers is not None and not _selected(test, tiers):
            marks.append(
                pytest.mark.skip(
                    reason=f"tier {_tier_name(test)!r}: this suite runs only the tiers "
                    f"{sorted(tiers)}"
                )
            )
        elif info is None:
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
                        reason=f"an opt-in check ({what!r}) that the suite of backend "
                        f"{name!r} does not list in opt_in"
                    )
                )
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def _is_literal(value: object) -> bool:
    """Whether ``value`` reads back from its ``repr`` as an equal value."""
    try:
        return bool(ast.literal_eval(repr(value)) == value)
    except (ValueError, SyntaxError):
        return False


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


def _backend_watch_params(backends: list[Any], hosts: Sequence[str] | None) -> list[Any]:
    """``pytest.param`` per (backend, watch) a parent-watch check runs on: every backend on
    its default watch (``auto``), and every watch on each of ``hosts`` that runs here
    (without ``hosts``, or none of them here: on the first backend that runs)."""
    by_name = {param.values[0]: param for param in backends}
    runs = [name for name, param in by_name.items() if not param.marks]
    chosen = [name for name in hosts or () if name in runs] or (runs or list(by_name))[:1]
    pairs: list[tuple[Any, Any]] = [(param, None) for param in backends]
    watches = [param for param in watch_params() if param.values[0] != "auto"]
    pairs += [(by_name[host], watch) for host in chosen for watch in watches]
    params = []
    for backend, watch in pairs:
        name = backend.values[0]
        if watch is None:
            params.append(pytest.param(name, "auto", id=f"{name}-auto", marks=backend.marks))
        else:
            params.append(
                pytest.param(
                    name,
                    watch.values[0],
                    id=f"{name}-{watch.values[0]}",
                    marks=[*backend.marks, *watch.marks],
                )
            )
    return params


class BackendSuite(BehaviourTests, RobustnessTests, DropInTests, ParentDeathTests):
    """Subclass in a test module to run every conformance test against ``backends``."""

    backends: ClassVar[Sequence[str] | None] = None
    #: Opt-in checks a remote backend passes, by name (``spawnkit.testing._tiers.OPT_IN``:
    #: "exit signals", "os._exit status"); local backends run them all.
    opt_in: ClassVar[Collection[str]] = ()
    #: The only tiers to run, by name: "universal" or one of its parts ("starting and
    #: results", "failures", "stopping", "resources"), a local-process tier ("process
    #: groups"), an opt-in capability; the others skip, saying so. ``None``: every tier.
    #: For a plugin that adds one thing to a mechanism a full run already proves (a command
    #: prefix on the fresh-interpreter backend): the tiers that thing can break.
    tiers: ClassVar[Collection[str] | None] = None
    #: Keyword options for the backend's factory in every job the kit starts, in this
    #: process and in the scripts it runs in new interpreters (hence Python literals only:
    #: ``{"address": "tcp://10.0.0.5:8786"}``). A check that cannot pass them skips, saying
    #: why.
    backend_options: ClassVar[Mapping[str, Any]] = {}
    #: The backends every parent watch runs on; the others run their default watch only.
    #: ``None``: the first of ``backends`` that runs here. A watch works in the worker, with
    #: the worker's parent and a descriptor the backend passes as it passes the result
    #: channel, which every check proves; so list each backend whose workers have another
    #: parent than the job's process (a fork server's ranks).
    watch_backends: ClassVar[Sequence[str] | None] = None
    # A broken backend hangs rather than fails: bound every test even where the author's
    # project configures no timeout.
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.timeout(120)]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        names = metafunc.fixturenames
        if "backend" not in names:
            if "watch" in names:
                metafunc.parametrize("watch", watch_params())
            return
        self._check_tiers()
        backends = backend_params(self.backends, metafunc.function, self.opt_in, self.tiers)
        if "watch" not in names:
            metafunc.parametrize("backend", backends)
            return
        params = _backend_watch_params(backends, self.watch_backends)
        metafunc.parametrize(("backend", "watch"), params)

    @classmethod
    def _check_tiers(cls) -> None:
        """A misspelt tier or opt-in would skip its checks without a word, and an option a
        new interpreter cannot read back would fail them far from its cause: refuse either
        by name."""
        options = cls.backend_options
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            raise spawnkit.ConfigError(
                f"{cls.__name__}.backend_options: {options!r} is no mapping of option names "
                "to values; give a dict such as {'address': 'tcp://10.0.0.5:8786'}"
            )
        for name, value in options.items():
            if not _is_literal(value):
                raise spawnkit.ConfigError(
                    f"{cls.__name__}.backend_options: {name}={value!r} is no Python literal; "
                    "the kit writes the options into the scripts it runs in new interpreters, "
                    "so give strings, numbers, booleans, None, or tuples, lists and dicts of "
                    "them"
                )
        wrong = [cls.opt_in] if isinstance(cls.opt_in, str) else sorted(set(cls.opt_in) - {*OPT_IN})
        if wrong:
            raise spawnkit.ConfigError(
                f"{cls.__name__}.opt_in: {', '.join(map(repr, wrong))} is no opt-in check of the "
                f"kit; give a collection of these: {', '.join(map(repr, OPT_IN))}"
            )
        if cls.tiers is None:
            return
        known = {"universal", *PARTS}
        known |= {_tier_name(getattr(cls, name)) for name in dir(cls) if name.startswith("test_")}
        wrong = [cls.tiers] if isinstance(cls.tiers, str) else sorted(set(cls.tiers) - known)
        if wrong:
            raise spawnkit.ConfigError(
                f"{cls.__name__}.tiers: {', '.join(map(repr, wrong))} is no tier of the kit; "
                f"give a collection of these: {', '.join(map(repr, sorted(known)))}"
            )

    @pytest.fixture(autouse=True)
    def _no_leaks(self, request: pytest.FixtureRequest) -> Iterator[None]:
        """Every conformance test fails if it leaves a process behind, and fails at once
        for a backend that cannot finish a tiny job (see :mod:`spawnkit.testing._probe`)."""
        backend = getattr(getattr(request.node, "callspec", None), "params", {}).get("backend")
        if isinstance(backend, str):
            broken = probe(backend, self.backend_options)
            if broken is not None:
                pytest.fail(broken, pytrace=False)
        with leak_guard():
            yield
