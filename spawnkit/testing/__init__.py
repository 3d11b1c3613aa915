"""The conformance kit: spawnkit's whole behaviour suite, runnable against any backend.

A plugin author gets the full run with two lines in a test module::

    from spawnkit.testing import BackendSuite
    class TestMyBackend(BackendSuite): backends = ["mybackend"]

Left at ``None``, ``backends`` means every registered backend (narrowed by the environment
variable ``SPAWNKIT_TEST_BACKENDS=fork,spawn``); an unavailable one is skipped with its
reason. Every test fails if it leaves a process behind. Needs pytest and pytest-timeout
(``pip install spawnkit[testing]``).

Names load on first use: workers import this package's target modules, and must not pay
for pytest or the plugin registry to do so.
"""

from __future__ import annotations

import importlib

__all__ = [
    "BackendSuite",
    "backend_params",
    "descendants",
    "leak_guard",
    "wait_for_files",
    "watch_params",
]

_WHERE = {
    "BackendSuite": "spawnkit.testing._suite",
    "backend_params": "spawnkit.testing._suite",
    "watch_params": "spawnkit.testing._suite",
    "descendants": "spawnkit.testing._processes",
    "leak_guard": "spawnkit.testing._processes",
    "wait_for_files": "spawnkit.testing._processes",
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._processes import descendants, leak_guard, wait_for_files
    from ._suite import BackendSuite, backend_params, watch_params


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'spawnkit.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
