"""The conformance suite, run against every registered backend (ids are backend names)."""

from __future__ import annotations

from spawnkit.testing import BackendSuite


class TestEveryBackend(BackendSuite):
    pass
