"""The fixture plugin passes the whole conformance kit, run exactly as docs/plugins.md says."""

from __future__ import annotations

from spawnkit.testing import BackendSuite


class TestShellwrap(BackendSuite):
    backends = ("shellwrap",)
