"""A backend whose workers are not the job's children and share no descriptor with it passes
the kit's universal tier and the opt-in checks it lists, without pretending to be local."""

from __future__ import annotations

import signal

import spawnkit
from spawnkit.testing import BackendSuite
from spawnkit.testing import _targets as t


class TestRelay(BackendSuite):
    backends = ("relay",)
    # Every universal check: results, failures, the stop and what a job gives back all pass
    # through its own handle and its own messages, none through core's result channel.
    opt_in = ("exit signals", "os._exit status", "non-daemon ranks at exit")


def test_a_rank_stopped_as_it_starts_ends_on_the_graceful_stop() -> None:
    # The host ignores SIGTERM, and its fork of a worker does so too until the worker puts
    # the default back: a stop sent in between must wait for that, not be lost to the
    # grace period's SIGKILL. Later ranks are the youngest at the stop, and the likeliest.
    ctx = spawnkit.spawn(t.block, nprocs=3, join=False, backend="relay")
    ctx.terminate(grace_period=60)
    assert [p.exitcode for p in ctx.processes] == [-signal.SIGTERM] * 3
