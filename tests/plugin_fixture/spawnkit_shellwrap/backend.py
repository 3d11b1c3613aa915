"""The backend and its handle: ``sh -c 'exec python -m spawnkit_shellwrap._worker'`` per rank."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import IO, final

import spawnkit
from spawnkit import plugin

__all__ = ["RANK_ENV", "ShellWrapBackend", "ShellWrapHandle"]

RANK_ENV = "SPAWNKIT_SHELLWRAP_RANK"

# The shell, not this process, tags the rank: a worker that sees the variable was started
# through the wrapper. `exec` keeps the pid, so the handle's pid is the worker's own.
_SCRIPT = f'{RANK_ENV}="$1"; export {RANK_ENV}; shift; exec "$0" "$@"'


def _bootstrap(spec: plugin.WorkerSpec) -> bytes:
    # Two pickles: the worker needs this sys.path before it can import what the spec names.
    return pickle.dumps((list(sys.path), plugin.main_reference())) + pickle.dumps(spec)


@final
class ShellWrapHandle:
    """One rank (a ``spawnkit.plugin.ProcessHandle``): a relay thread feeds it the spec, reaps
    it, then closes the sentinel pipe."""

    def __init__(self, process: subprocess.Popen[bytes], bootstrap: bytes) -> None:
        self._process = process
        self._sentinel, self._ended = os.pipe()
        # The job's side only: a fork of this process must not keep the pipe open.
        plugin.mark_parent_only(self._sentinel, self._ended)
        # spawnkit's helper thread takes no signals: SIGTERM to the program reaches its
        # main thread, and a worker that dies before reading costs EPIPE, not SIGPIPE.
        self._relay = plugin.start_helper_thread(
            self._feed_and_reap,
            process.stdin,
            bootstrap,
            name=f"spawnkit-shellwrap-{process.pid}",
        )

    def _feed_and_reap(self, stdin: IO[bytes] | None, bootstrap: bytes) -> None:
        # In a thread, so start() returns before a big payload has gone down the pipe.
        if stdin is not None:
            try:
                stdin.write(bootstrap)
                stdin.close()
            except OSError:  # the worker died before reading: wait() reports how
                pass
        self._process.wait()
        plugin.unmark_parent_only(self._ended)
        os.close(self._ended)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def sentinel(self) -> int:
        return self._sentinel

    def poll(self) -> int | None:
        # Popen already speaks the multiprocessing convention: -N for death by signal N.
        return self._process.poll()

    def close(self) -> None:
        self._relay.join()
        plugin.unmark_parent_only(self._sentinel)
        os.close(self._sentinel)


@final
class ShellWrapBackend(plugin.LocalBackend):
    """Starts every rank as ``sh -c SCRIPT python -m spawnkit_shellwrap._worker``."""

    def __init__(self, shell: str) -> None:
        if not isinstance(shell, str) or not os.access(shell, os.X_OK):
            raise spawnkit.ConfigError(
                f"backend 'shellwrap': shell={shell!r} is not an executable file; "
                "pass the path of a POSIX shell, such as shell='/bin/sh'"
            )
        self._shell = shell

    def start_process(self, spec: plugin.WorkerSpec) -> ShellWrapHandle:
        argv = [self._shell, "-c", _SCRIPT, sys.executable, str(spec.rank)]
        argv += ["-m", "spawnkit_shellwrap._worker"]
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            # pass_fds keeps each descriptor's number, so spec.fds stays valid as it is.
            pass_fds=spec.fds,
            close_fds=True,
        )
        return ShellWrapHandle(process, _bootstrap(spec))
