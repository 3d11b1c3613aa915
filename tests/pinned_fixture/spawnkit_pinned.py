"""spawnkit-pinned: a fresh interpreter per rank, each on a CPU of its own (Linux)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from spawnkit import plugin
from spawnkit_backends import FreshInterpreterBackend


class PinnedBackend(FreshInterpreterBackend):
    name = "pinned"

    def command_prefix(self, rank: int) -> Sequence[str]:
        cpus = sorted(os.sched_getaffinity(0))  # the CPUs this job may use
        return ["taskset", "--cpu-list", str(cpus[rank % len(cpus)])]


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        "pinned",
        PinnedBackend,
        options=PinnedBackend.OPTIONS,
        unavailable=None if shutil.which("taskset") else "needs taskset (util-linux)",
        description="a fresh interpreter per rank, pinned to one CPU with taskset",
    )
