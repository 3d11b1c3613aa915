"""The kit's tiers: which checks a backend must pass, by what its workers are.

- Universal (no mark): every backend, local or remote: results, errors, exit codes,
  terminate, join timeouts, bad input.
- :func:`local_process`: backends whose workers are processes of this machine (registered
  without ``remote=True``): pids, process groups, grandchildren, parent watches, signals,
  descriptors. A remote backend skips them, saying why.
- :func:`opt_in`: checks of a capability a remote backend may have or not. Local backends
  always run them; a remote backend's suite lists the ones it passes in
  ``BackendSuite.opt_in``, by these names (:data:`OPT_IN`):

  - ``"exit signals"``: a worker that died of a signal is reported with that signal's name;
  - ``"os._exit status"``: the status a worker passed to ``os._exit()`` is its exit code.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["OPT_IN", "local_process", "local_process_tests", "opt_in", "tier_of"]

#: Every opt-in capability the kit checks; ``opt_in`` refuses any other name.
OPT_IN = ("exit signals", "os._exit status")

F = TypeVar("F", bound=Callable[..., object])
C = TypeVar("C", bound=type)

_ATTRIBUTE = "_spawnkit_tier"


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
    """``("universal", "")``, ``("local", what)`` or ``("opt_in", capability)``."""
    tier = getattr(test, _ATTRIBUTE, None)
    return tier if isinstance(tier, tuple) else ("universal", "")
