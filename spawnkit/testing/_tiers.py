"""The kit's tiers: which checks a backend must pass, by what its workers are.

- Universal: every backend, local or remote, in four parts a suite may pick by name
  (:data:`PARTS`): ``"starting and results"``, ``"failures"``, ``"stopping"``,
  ``"resources"``. ``"universal"`` names them all.
- :func:`local_process`: backends whose workers are processes of this machine (registered
  without ``remote=True``): pids, process groups, grandchildren, parent watches, signals,
  descriptors. A remote backend skips them, saying why.
- :func:`opt_in`: checks of a capability a remote backend may have or not. Local backends
  always run them; a remote backend's suite lists the ones it passes in
  ``BackendSuite.opt_in``, by these names (:data:`OPT_IN`):

  - ``"exit signals"``: a worker that died of a signal is reported with that signal's name;
  - ``"os._exit status"``: the status a worker passed to ``os._exit()`` is its exit code;
  - ``"non-daemon ranks at exit"``: the interpreter's exit waits for the ranks of a job
    started with ``daemon=False`` to finish. An engine that shuts itself down at exit
    (Dask's in-process scheduler, like the stdlib's thread pools) ends them instead, and
    ``WorkerSpec`` tells a backend nothing it could do about it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["OPT_IN", "PARTS", "local_process", "local_process_tests", "opt_in", "part", "tier_of"]

#: The parts of the universal tier, each a name a suite's ``tiers`` may list.
PARTS = ("starting and results", "failures", "stopping", "resources")

#: Every opt-in capability the kit checks; ``opt_in`` refuses any other name.
OPT_IN = ("exit signals", "os._exit status", "non-daemon ranks at exit")

F = TypeVar("F", bound=Callable[..., object])
C = TypeVar("C", bound=type)

_ATTRIBUTE = "_spawnkit_tier"


def part(name: str) -> Callable[[F], F]:
    """Mark a universal check as one of the part ``name`` (one of :data:`PARTS`)."""
    if name not in PARTS:
        raise ValueError(f"{name!r} is no part of the universal tier; list it in PARTS first")

    def mark(test: F) -> F:
        setattr(test, _ATTRIBUTE, ("universal", name))
        return test

    return mark


def local_process(what: str) -> Callable[[F], F]:
    """Mark a check of local-process behaviour; ``what`` names it (``"process groups"``)."""

    def mark(test: F) -> F:
        setattr(test, _ATTRIBUTE, ("local", what))
        return test

    return mark


def local_process_tests(what: str) -> Callable[[C], C]:
    """Mark every check a class defines as a check of local-process behaviour."""

    def mark(cls: C) -> C:
        for name, test in vars(cls).items():
            if name.startswith("test_") and callable(test):
                setattr(test, _ATTRIBUTE, ("local", what))
        return cls

    return mark


def opt_in(capability: str) -> Callable[[F], F]:
    """Mark a check that a remote backend runs only when its suite opts into ``capability``."""

    if capability not in OPT_IN:
        raise ValueError(f"{capability!r} is no opt-in capability; list it in OPT_IN first")

    def mark(test: F) -> F:
        setattr(test, _ATTRIBUTE, ("opt_in", capability))
        return test

    return mark


def tier_of(test: object) -> tuple[str, str]:
    """``("universal", part)``, ``("local", what)`` or ``("opt_in", capability)``; an
    unmarked check is ``("universal", "")``, in no part."""
    tier = getattr(test, _ATTRIBUTE, None)
    return tier if isinstance(tier, tuple) else ("universal", "")
