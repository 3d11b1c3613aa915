"""Plugins that meet spawnkit's protocols without subclassing them: ``mypy --strict`` accepts it.

A local backend builds on ``LocalBackend`` and hands back a small process handle; a backend
whose workers run elsewhere implements ``Backend`` and ``WorkerHandle`` directly. Type-checked
by tests/test_typing.py, never imported or run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future

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

    def close(self) -> None:
        os.close(self._sentinel)


class Backend(plugin.LocalBackend):
    def __init__(self, python: str = sys.executable) -> None:
        self._python = python

    def start_process(self, spec: plugin.WorkerSpec) -> Handle:
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


class RemoteHandle:
    """A rank that an engine runs somewhere: its future carries the worker's report."""

    def __init__(self, future: Future[plugin.Report]) -> None:
        self._future = future

    @property
    def pid(self) -> int | None:
        return None

    def wait_fds(self) -> Sequence[int]:
        return ()

    def poll(self) -> plugin.Outcome | None:
        if not self._future.done():
            return None
        report = self._future.result()
        return plugin.Outcome(report.status, report)

    def stop(self, force: bool = False) -> None:
        self._future.cancel()

    def close(self) -> None:
        pass


class RemoteBackend:
    def start(self, spec: plugin.WorkerSpec, notify: Callable[[], None]) -> RemoteHandle:
        future: Future[plugin.Report] = Future()
        future.add_done_callback(lambda _: notify())
        future.set_result(plugin.run_rank(spec))
        return RemoteHandle(future)

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
    registry.add(
        "remote-sample",
        RemoteBackend,
        remote=True,
        watches="own",
        description="a typing sample",
    )


@plugin.hookimpl
def spawnkit_register_watches(registry: plugin.WatchRegistry) -> None:
    registry.add("sample", ParentSide, priority=-10, description="a typing sample")


# The protocols themselves, checked structurally.
backend: plugin.Backend = Backend()
remote_backend: plugin.Backend = RemoteBackend()
process: plugin.ProcessHandle = Handle(subprocess.Popen(["true"]), 0)
handle: plugin.WorkerHandle = RemoteHandle(Future())
parent_watch: plugin.ParentWatch = ParentSide()
child_watch: plugin.ChildWatch = ChildSide()
