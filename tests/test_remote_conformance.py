"""A backend whose workers are not the job's children and share no descriptor with it passes
the kit's universal tier and the opt-in checks it lists, without pretending to be local."""

from __future__ import annotations

from spawnkit.testing import BackendSuite


class TestRelay(BackendSuite):
    backends = ("relay",)
    opt_in = ("exit signals", "os._exit status")
