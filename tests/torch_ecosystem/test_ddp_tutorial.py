"""PyTorch's DDP tutorial, launched by torch.multiprocessing.spawn switched onto spawnkit.

The tutorial's code is unchanged but for the setup lines that set MASTER_ADDR/MASTER_PORT:
spawnkit gives every rank those (tox -e torch).
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
