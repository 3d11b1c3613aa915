"""The conformance suite, run against every backend spawnkit ships (ids are backend names).

Third-party backends run it from their own test modules (the fixture plugin does, in
test_fixture_conformance.py), so each backend is tested once.
"""

from __future__ import annotations

from spawnkit.testing import BackendSuite


class TestEveryBackend(BackendSuite):
    backends = ("fork", "forkserver", "spawn", "subprocess")
    # Every watch runs on fork and on forkserver, where watch and backend meet: a forkserver
    # rank's parent is the fork server, not the job, and the watches that follow the parent
    # (poll, prctl; pipe and pidfd when they fall back to it) meet that other parent.
    # spawn's and subprocess's workers are the job's children, as fork's are, and get a
    # watch's descriptor as they get the result channel, which every check proves: they
    # run their default watch.
    watch_backends = ("fork", "forkserver")
