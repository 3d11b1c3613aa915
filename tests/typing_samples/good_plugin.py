"""A plugin that meets spawnkit's protocols without subclassing: ``mypy --strict`` accepts it.

Type-checked by tests/test_typing.py, never imported or run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import spawnkit
from spawnkit import plugin


class Handle:
    def __init__(self, process: subprocess.Popen[bytes], sentinel: int) -> None:
        self._process = process
        self._sentinel = sentinel

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def sentinel(self) -> int:
        return self._sentinel

    def poll(self) -> int | None:
        return self._process.poll()

    def send_signal(self, signum: int) -> None:
        plugin.signal_process_group(self._process.pid, signum)

    def close(self) -> None:
        os.close(self._sentinel)


class Backend:
    def __init__(self, python: str = sys.executable) -> None:
        self._python = python

    def start(self, spec: plugin.WorkerSpec) -> Handle:
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(
                [self._python, "-m", "sample_worker"],
                pass_fds=(*spec.fds, write_end),
            )
        except OSError as exc:
            os.close(read_end)
            raise spawnkit.LaunchError(f"cannot start {self._python!r}: {exc}") from exc
        finally:
            os.close(write_end)
        return Handle(process, read_end)

    def close(self) -> None:
        pass


class ChildSide:
    name = "sample"

    def arm(
        self, fds: Sequence[int], spec: plugin.WorkerSpec, shutdown: Callable[[], None]
    ) -> None:
        if os.getppid() != spec.parent_pid:
            shutdown()


class ParentSide:
    def child_watch(self) -> ChildSide:
        return ChildSide()

    def fds(self) -> tuple[int, ...]:
        return ()

    def private_fds(self) -> tuple[int, ...]:
        return ()

    def close(self) -> None:
        pass


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add("sample", Backend, options=["python"], description="a typing sample")


@plugin.hookimpl
def spawnkit_register_watches(registry: plugin.WatchRegistry) -> None:
    registry.add("sample", ParentSide, priority=-10, description="a typing sample")


# The protocols themselves, checked structurally.
backend: plugin.Backend = Backend()
handle: plugin.WorkerHandle = Handle(subprocess.Popen(["true"]), 0)
parent_watch: plugin.ParentWatch = ParentSide()
child_watch: plugin.ChildWatch = ChildSide()
