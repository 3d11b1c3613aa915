"""torch's tensors cross into workers through the reducers torch registers (tox -e torch).

torch registers reducers with multiprocessing's ForkingPickler that move a tensor's storage
to shared memory and pass its descriptor; spawnkit pickles a job the same way, so a worker's
in-place change is seen by the parent, as under ``torch.multiprocessing.spawn``.
"""

from __future__ import annotations

import pytest
import spawnkit

torch = pytest.importorskip(
    "torch", reason="torch is not installed (tox -e torch installs its CPU build where it can)"
)

BACKENDS = ["spawn", "forkserver", "subprocess", "fork"]


def add_rank(rank: int, tensor: torch.Tensor) -> None:
    tensor[rank] += rank + 1


def sum_of(rank: int, tensor: torch.Tensor) -> float:
    return float(tensor.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_in_place_change_in_a_worker_is_seen_by_the_parent(backend: str) -> None:
    tensor = torch.zeros(4)
    if backend == "fork":
        tensor.share_memory_()  # a fork child's memory is its own copy, as with torch
    spawnkit.spawn(add_rank, args=(tensor,), nprocs=4, backend=backend)
    assert tensor.tolist() == [1.0, 2.0, 3.0, 4.0]


# Not fork: the parent's sum() started torch's OpenMP pool, which a fork child inherits
# locked (the hazard torch documents for fork); the pickled path is what is tested here.
@pytest.mark.parametrize("backend", ["spawn", "forkserver", "subprocess"])
def test_a_large_tensor_arrives_whole(backend: str) -> None:
    tensor = torch.arange(1 << 20, dtype=torch.float64)
    expected = float(tensor.sum())
    assert spawnkit.spawn(sum_of, args=(tensor,), nprocs=2, backend=backend) == [expected] * 2
