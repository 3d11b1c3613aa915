"""The conformance suite, run against every backend spawnkit ships (ids are backend names).

Third-party backends run it from their own test modules (the fixture plugin does, in
test_fixture_conformance.py), so each backend is tested once.
"""

from __future__ import annotations

from spawnkit.testing import BackendSuite


class TestEveryBackend(BackendSuite):
    backends = ("fork", "forkserver", "spawn", "subprocess")
