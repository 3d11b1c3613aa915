"""The job's side: start the host, send it ranks and stop requests, read their outcomes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, final

import spawnkit
from spawnkit import plugin

from . import _messages

__all__ = ["BROKEN_ENV", "RelayBackend", "RelayHandle"]

# Makes the backend wrong on purpose, for the kit's own tests: "poll" blocks in poll().
BROKEN_ENV = "SPAWNKIT_RELAY_BROKEN"


@final
class RelayHandle:
    """One rank the host runs: no pid here, no descriptor; the reader thread fills it in."""

    def __init__(self, backend: RelayBackend, rank: int, notify: Callable[[], None]) -> None:
        self._backend = backend
        self.rank = rank
        self.notify = notify
        self.outcome: plugin.Outcome | None = None

    @property
    def pid(self) -> int | None:
        return None

    def wait_fds(self) -> tuple[int, ...]:
        return ()  # the reader thread calls notify() instead

    def poll(self) -> plugin.Outcome | None:
        if os.environ.get(BROKEN_ENV) == "poll":
            threading.Event().wait()  # what a broken backend does: block
        return self.outcome

    def stop(self, force: bool = False) -> None:
        if self.outcome is None:
            self._backend.send(("stop", self.rank, force))

    def close(self) -> None:
        pass


@final
class RelayBackend:
    """Starts the host once per job; each ``start()`` asks it for one more rank."""

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair()
        plugin.mark_parent_only(self._sock.fileno())
        try:
            # A session of its own: the job's terminal signals and process group stay the
            # job's, and the host holds nothing of the job's but its end of the socket.
            self._host = subprocess.Popen(
                [sys.executable, "-m", "spawnkit_relay.host", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            plugin.unmark_parent_only(self._sock.fileno())
            self._sock.close()
            raise spawnkit.LaunchError(f"backend 'relay' cannot start its host: {exc}") from exc
        finally:
            theirs.close()
        self._send_lock = threading.Lock()
        self._handles: dict[int, RelayHandle] = {}
        self._lock = threading.Lock()
        self.send(("hello", list(sys.path), plugin.main_reference()))
        self._reader = plugin.start_helper_thread(self._read, name="spawnkit-relay-reader")

    def send(self, message: Any) -> None:
        with self._send_lock:
            try:
                _messages.send(self._sock, message)
            except OSError:  # the host is gone: the reader reports every rank as lost
                pass

    def start(self, spec: plugin.WorkerSpec, notify: Callable[[], None]) -> RelayHandle:
        handle = RelayHandle(self, spec.rank, notify)
        with self._lock:
            self._handles[spec.rank] = handle
        self.send(("start", spec.rank, spec))
        return handle

    def _read(self) -> None:
        while True:
            message = _messages.receive(self._sock)
            if message is None:
                break
            _, rank, status, report, reason = message
            with self._lock:
                handle = self._handles[rank]
            handle.outcome = plugin.Outcome(status, report, reason=reason)
            handle.notify()
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            if handle.outcome is None:
                handle.outcome = plugin.Outcome(
                    255, None, lost="the relay host ended before the rank reported"
                )
                handle.notify()

    def close(self) -> None:
        # The host sees the end of the socket, ends whatever still runs, and exits.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout=30)
        plugin.unmark_parent_only(self._sock.fileno())
        self._sock.close()
        try:
            self._host.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._host.kill()
            self._host.wait()
