"""The Slurm tests run only against the cluster ``tests/on_slurm/run.sh`` starts, in a
network namespace with loopback alone."""

from __future__ import annotations

import os
import shutil

import pytest

NAMESPACE_ENV = "SPAWNKIT_SLURM_NAMESPACE"


def _only_loopback() -> bool:
    # /proc/net speaks of the reading process's own network namespace (/sys may not).
    try:
        with open("/proc/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def _why_not() -> str | None:
    if shutil.which("srun") is None:
        return "Slurm is not installed (tox -e slurm installs it)"
    if os.environ.get(NAMESPACE_ENV) != "1" or not _only_loopback():
        return (
            "the Slurm tests run only against their own cluster in a network namespace with "
            "loopback alone: tests/on_slurm/run.sh (tox -e slurm) makes one"
        )
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = _why_not()
    if why is None:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=why))
