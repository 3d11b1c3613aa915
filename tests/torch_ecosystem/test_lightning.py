"""Lightning's and Fabric's launchers, switched onto spawnkit (tox -e torch).

``_MultiProcessingLauncher`` calls ``torch.multiprocessing.start_processes`` with the
strategy's start method; rank 0's results travel back to the parent through its queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="tox -e torch installs torch's CPU build")
pl = pytest.importorskip("lightning.pytorch", reason="tox -e torch installs lightning")
import _lightning_targets as targets  # noqa: E402
import spawnkit  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from lightning.fabric import Fabric  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy  # noqa: E402
from spawnkit._context import RankProcess  # noqa: E402

pytestmark = [
    # A fork rank inherits the test's warning filters (errors, in this suite), and torch
    # 2.13 deprecates a name Lightning 2.6 still uses on every step.
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
    # Lightning's hint to a machine that has Slurm's srun on PATH (this one's Slurm env
    # installs it): about the machine, not about the job these tests run.
    pytest.mark.filterwarnings("ignore:The `srun` command is available on your system"),
    # A job under spawn starts two ranks that import torch and Lightning: tens of seconds
    # on a loaded 2-core machine, hence the room above the suite's 120 s.
    pytest.mark.timeout(300),
]

# (strategy, the switch's backend and options): ddp_spawn and ddp_fork as Lightning starts
# them, and ddp_spawn moved to a warm fork server that has torch and Lightning imported.
SETUPS = {
    "ddp_spawn": ("ddp_spawn", None, {}),
    "ddp_fork": ("ddp_fork", None, {}),
    "forkserver-preload": ("ddp_spawn", "forkserver", {"preload": ["torch", "lightning"]}),
}


def _trainer(strategy: str, root: Path) -> Any:
    return pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="spawn") if strategy == "ddp_spawn" else strategy,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


@pytest.mark.parametrize("setup", list(SETUPS))
def test_fit_brings_rank_zeros_results_back(tmp_path: Path, setup: str) -> None:
    strategy, backend, options = SETUPS[setup]
    model = targets.TinyModel()
    before = model.layer.weight.detach().clone()
    with spawnkit.use_for_torch(backend, **options):
        trainer = _trainer(strategy, tmp_path)
        trainer.fit(model)
        # A second job: under forkserver, from the server the first one warmed.
        results = trainer.validate(model) if backend == "forkserver" else None
    # The launcher keeps the processes start_processes gave it: spawnkit's.
    assert isinstance(trainer.strategy.launcher.procs[0], RankProcess)
    # Rank 0's trained weights and metrics are copied into the parent's objects.
    assert not model.layer.weight.detach().equal(before)
    assert "train_loss" in trainer.callback_metrics
    assert float(trainer.callback_metrics["val_rank"]) == 1.0  # max over ranks: both ran
    if results is not None:
        assert len(results) == 1
        assert results[0]["val_rank"] == 1.0


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_failing_rank_fails_fit_with_its_error(tmp_path: Path, setup: str) -> None:
    strategy, backend, options = SETUPS[setup]
    with (
        spawnkit.use_for_torch(backend, grace_period=2, **options),
        pytest.raises(mp.ProcessRaisedException, match="training fails on rank 1") as caught,
    ):
        _trainer(strategy, tmp_path).fit(targets.TinyModel(fail_on_rank=1))
    assert caught.value.error_index == 1
    assert isinstance(caught.value.__cause__, ValueError)


def test_fabric_launch_returns_rank_zeros_value() -> None:
    _, backend, options = SETUPS["forkserver-preload"]
    with spawnkit.use_for_torch(backend, **options):
        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
        result = fabric.launch(targets.fabric_work, 10)
    assert result["rank"] == 0
    assert result["group_leader"]
    assert result["total"] == 30.0  # (1 + 2) * 10: the all-reduce crossed both ranks


def test_a_failing_fabric_rank_fails_launch() -> None:
    with (
        spawnkit.use_for_torch(grace_period=2),
        pytest.raises(mp.ProcessRaisedException, match="fabric rank 1 fails"),
    ):
        Fabric(accelerator="cpu", devices=2, strategy="ddp_fork").launch(targets.fabric_fail)
