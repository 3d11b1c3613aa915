"""PyTorch's DDP tutorial, launched by torch.multiprocessing.spawn switched onto spawnkit.

The tutorial's code is unchanged but for the setup lines that set MASTER_ADDR/MASTER_PORT
(spawnkit gives every rank those), and a barrier after training that steps around a race
of torch's at exit (see _ddp_targets._settle_before_exit) (tox -e torch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="tox -e torch installs torch's CPU build")
import _ddp_targets as targets  # noqa: E402
import spawnkit  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


@pytest.fixture(autouse=True)
def _no_rendezvous_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("backend", "options"),
    [(None, {}), ("forkserver", {"preload": ["torch", "torch.distributed"]})],
    ids=["start_method", "forkserver-preload"],
)
def test_the_ddp_tutorial_trains_on_two_ranks(
    tmp_path: Path, backend: str | None, options: dict[str, object]
) -> None:
    with spawnkit.use_for_torch(backend, **options):
        assert mp.spawn(targets.demo_basic, args=(2, str(tmp_path)), nprocs=2, join=True) is None
    (sum0, leader0), (sum1, leader1) = (
        ast.literal_eval((tmp_path / f"rank{r}").read_text()) for r in range(2)
    )
    # Each rank saw different data: equal parameters mean the gradients were all-reduced.
    assert sum0 == pytest.approx(sum1)
    assert leader0
    assert leader1


def test_a_failing_rank_ends_the_job_while_another_waits_in_all_reduce(tmp_path: Path) -> None:
    with (
        spawnkit.use_for_torch(grace_period=2),
        pytest.raises(
            mp.ProcessRaisedException, match="rank 1 fails while rank 0 waits in all_reduce"
        ) as caught,
    ):
        mp.spawn(targets.fail_during_all_reduce, args=(2, str(tmp_path)), nprocs=2)
    assert caught.value.error_index == 1
    assert isinstance(caught.value, spawnkit.ProcessRaisedException)
    assert (tmp_path / "rank0-in-all-reduce").exists()
    assert not (tmp_path / "rank0-finished").exists()


@pytest.mark.parametrize(
    ("backend", "options"),
    [("spawn", {}), ("forkserver", {"preload": ["torch", "torch.distributed"]})],
    ids=["spawn", "forkserver-preload"],
)
def test_a_ddp_job_whose_rank_fails_once_restarts_and_trains_on_a_new_port(
    tmp_path: Path, backend: str, options: dict[str, object]
) -> None:
    with spawnkit.spawn(
        targets.demo_basic_failing_once,
        args=(2, str(tmp_path), 1),
        nprocs=2,
        join=False,
        backend=backend,
        max_restarts=1,
        grace_period=1,  # stopping attempt 0: rank 0 is blocked in gloo
        timeout=100,
        **options,
    ) as ctx:
        results = ctx.results()
        report = ctx.report()

    # Attempt 1 trained: every rank ran it, on one port, and DDP kept the replicas equal
    # although each rank saw different data, so the gradients were all-reduced again.
    (attempt0, port0, sum0), (attempt1, port1, sum1) = results
    assert (attempt0, attempt1) == (1, 1)
    assert port0 == port1
    assert sum0 == pytest.approx(sum1)
    assert report.outcome == "succeeded"
    assert report.attempt == 1
    assert [r.state for r in report.ranks] == ["succeeded", "succeeded"]

    # Attempt 0 is in the report, rank 1 its root cause; rank 0, blocked in the all-reduce
    # rank 1 never joined, never got past it: spawnkit stopped it (or, had rank 1's exit
    # closed its sockets first, gloo would have failed it: a failure later than rank 1's).
    (first,) = report.attempts
    assert first.attempt == 0
    assert first.outcome == "failed"
    assert first.root_cause is not None
    assert first.root_cause.rank == 1
    assert first.root_cause.error == "RuntimeError: rank 1 fails in attempt 0 after one DDP step"
    assert first.ranks[0].state in ("stopped", "failed"), first.format()
    assert (tmp_path / "attempt0-rank0-in-step-2").exists()
    assert not (tmp_path / "attempt0-rank0-finished").exists()

    # Each attempt rendezvoused on a port of its own: both ranks of attempt 0 on one, which
    # attempt 1 did not reuse.
    first_ports = {(tmp_path / f"attempt0-rank{r}-port").read_text() for r in range(2)}
    assert len(first_ports) == 1
    assert first_ports != {port0}
    assert {(tmp_path / f"attempt1-rank{r}-port").read_text() for r in range(2)} == {port0}
