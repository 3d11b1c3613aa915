"""A backend that breaks the contract is told so by name, method and what was expected, before
its first rank is recorded: never an AttributeError from deep inside core."""

from __future__ import annotations

import dataclasses

import pytest
import spawnkit
from spawnkit._registry import plugins

import _remote_outcome_targets as t


def _register(monkeypatch: pytest.MonkeyPatch, made: object) -> str:
    registry = plugins()
    info = dataclasses.replace(registry.backend("spawn"), name="broken", factory=lambda: made)
    monkeypatch.setitem(registry.backends, "broken", info)
    return "broken"


@pytest.mark.parametrize(
    ("returns", "lacks"),
    [
        (None, "pid (an int or None), wait_fds(), poll(), stop(), close()"),
        (t.HalfHandle(), "poll()"),
    ],
    ids=["none", "no-poll"],
)
def test_a_start_that_returns_no_worker_handle_is_a_plugin_error_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, returns: object, lacks: str
) -> None:
    backend = t.NoHandle(returns)
    name = _register(monkeypatch, backend)
    with pytest.raises(spawnkit.PluginError) as caught:
        spawnkit.spawn(t.returns_rank, nprocs=2, backend=name, join=False)
    told = str(caught.value)
    assert "backend 'broken': start() returned" in told
    assert f"which lacks {lacks};" in told
    assert "start() must return a WorkerHandle" in told
    assert backend.starts == 1  # rank 1 never started
