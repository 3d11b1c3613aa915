"""The job's side of the ``forkserver`` backend: its fork server, and a handle per rank.

The server (``_zygote``) is a fresh interpreter that has imported what
every worker needs, the job's ``__main__`` (as ``__mp_main__``) and the ``preload`` modules,
and forks a rank per request. One server serves every job of this process whose preload
list, interpreter, ``sys.path``, ``sys.argv``, ``__main__`` and environment are the same; a
job that differs in any of them retires it (it ends with its last rank) and starts its own.
It ends with this process: its control socket reaches end-of-file however the process ends.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, final

import spawnkit
from spawnkit import _fresh, plugin
from spawnkit._fds import identity, readable

from ._zygote_protocol import (
    CODE,
    FAILED,
    FORK,
    HAS_STDERR,
    HAS_STDOUT,
    MAX_FDS,
    READY,
    REQUEST,
    RETIRE,
)

if TYPE_CHECKING:
    import subprocess

__all__ = ["ForkServerBackend", "ForkServerHandle", "server_pids"]

NAME = "forkserver"
SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote.py")
# How long a server may take to import the preload modules and the job's __main__ (torch
# alone takes seconds on a slow disk), and to answer a request with the new rank's pid.
READY_TIMEOUT = 600.0
FORK_TIMEOUT = 60.0
# What every rank imports before the job's code: imported once, in the server.
_WARM = (
    "spawnkit._child",
    "spawnkit._watches.none",
    "spawnkit._watches.pidfd",
    "spawnkit._watches.pipe",
    "spawnkit._watches.poll",
    "spawnkit._watches.prctl",
    "traceback",
    # What the worker setup imports on first use: faulthandler, and for its SIGTERM pipe.
    "faulthandler",
    "fcntl",
    "resource",
)
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # macOS has none; Python ignores SIGPIPE there


def unavailable_reason() -> str | None:
    """Why ranks cannot be forked from a server here, or ``None`` if they can."""
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return f"there is no fork() with descriptor passing on {sys.platform}; use 'spawn'"
    return _fresh.unavailable_reason()


def check_preload(preload: object) -> tuple[str, ...]:
    """The ``preload`` option as module names, checked before any process starts."""
    if preload is None:
        return ()
    if isinstance(preload, (str, bytes)) or not isinstance(preload, Iterable):
        raise spawnkit.InvalidArgumentError(
            f"backend {NAME!r}: preload must be a list of module names, such as "
            f"['numpy', 'torch'], not {preload!r}"
        )
    import importlib.util

    names: list[str] = []
    for name in preload:
        if not isinstance(name, str):
            raise spawnkit.InvalidArgumentError(
                f"backend {NAME!r}: preload items must be module names (str), not "
                f"{type(name).__name__} {name!r}"
            )
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise spawnkit.ConfigError(
                f"backend {NAME!r}: preload item {name!r} is not a module name; write it as "
                "in an import statement, such as 'numpy' or 'torch.nn'"
            )
        if name == "__main__" or name in names:
            continue  # the job's __main__ is preloaded anyway
        top = name.partition(".")[0]
        if top not in sys.modules and importlib.util.find_spec(top) is None:
            raise spawnkit.ConfigError(
                f"backend {NAME!r}: preload names {name!r}, but there is no module {top!r} "
                "on this interpreter's sys.path; install it or leave it out of preload"
            )
        names.append(name)
    return tuple(names)


def _interpreter_flags() -> list[str]:
    # The job's -O, -X, -W and the like, as multiprocessing gives its spawned interpreters.
    import subprocess

    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if callable(flags) else []


def _recv_exact(sock: socket.socket, size: int, what: str, server: _Server) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except socket.timeout:
            raise spawnkit.LaunchError(
                f"the fork server (pid {server.pid}) did not {what} within "
                f"{sock.gettimeout():.0f} s"
            ) from None
        except OSError:  # reset: the server is gone
            chunk = b""
        if not chunk:
            raise _ServerGone(
                f"the fork server (pid {server.pid}) exited before it could {what}"
                f"{server.exit_note()}"
            )
        data += chunk
    return data


class _ServerGone(spawnkit.LaunchError):
    """The server died before it forked the rank: a new one can."""


class _Server:
    """One fork server process and the control socket to it."""

    def __init__(self, key: tuple[Any, ...], header: bytes) -> None:
        import subprocess

        self.key = key
        self.owner = os.getpid()
        self.live = 0
        self.retired = False
        self.lock = threading.Lock()
        ours, theirs = socket.socketpair()
        fd = _fresh._above_stdio(theirs.detach())
        where = [_fresh.spawnkit_dir(), os.path.dirname(os.path.dirname(SERVER))]
        import_path = os.pathsep.join(dict.fromkeys(where))
        argv = [sys.executable, *_interpreter_flags(), SERVER, import_path]
        try:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [*argv, str(fd), str(os.getpid())],
                pass_fds=(fd,),
                close_fds=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None if identity(2) is not None else subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise spawnkit.LaunchError(
                f"backend {NAME!r} cannot start its fork server with {sys.executable!r}: "
                f"{exc.strerror or exc}"
            ) from exc
        finally:
            os.close(fd)
        self.pid = self.process.pid
        plugin.mark_helper_process(self.pid)
        self.control = ours
        plugin.mark_parent_only(ours.fileno())
        try:
            self._handshake(header)
        except BaseException:
            self.shut_down()
            raise

    def _handshake(self, header: bytes) -> None:
        self.control.settimeout(READY_TIMEOUT)
        try:
            self.control.sendall(_fresh._frame(header) + header, _NOSIGNAL)
        except OSError as exc:
            raise spawnkit.LaunchError(
                f"the fork server (pid {self.pid}) exited before it read its job{self.exit_note()}"
            ) from exc
        kind = _recv_exact(self.control, 1, "get ready", self)
        size = int.from_bytes(_recv_exact(self.control, 8, "get ready", self), "big")
        text = _recv_exact(self.control, size, "get ready", self).decode("utf-8", "replace")
        self.control.settimeout(None)
        if kind == FAILED:
            last = text.strip().splitlines()[-1] if text.strip() else "no traceback"
            raise spawnkit.LaunchError(
                f"backend {NAME!r}: the fork server failed to import what it preloads "
                f"({last}); fix that import or leave the module out of preload. The "
                f"server's traceback:\n{text}"
            )
        if kind != READY:
            raise spawnkit.LaunchError(f"the fork server (pid {self.pid}) said {kind!r}")

    def exited(self) -> bool:
        """Whether the server has exited; a server that is exiting gets a second to finish."""
        import subprocess

        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_note(self) -> str:
        if not self.exited():
            return ""
        code = self.process.returncode
        return f" (exit status {code}; its stderr, the job's, says why)"

    def alive(self) -> bool:
        return self.process.poll() is None

    def start(self, spec: plugin.WorkerSpec) -> ForkServerHandle:
        """Have the server fork ``spec``'s rank; return once the rank's pid is known."""
        import pickle

        spec = spec.with_parent_pid(self.pid)
        standard = [fd for fd in (1, 2) if identity(fd) is not None]
        flags = (HAS_STDOUT if 1 in standard else 0) | (HAS_STDERR if 2 in standard else 0)
        if 2 + len(standard) + len(spec.fds) > MAX_FDS:
            raise spawnkit.LaunchError(
                f"rank {spec.rank} carries {len(spec.fds)} descriptors; a fork server takes "
                f"at most {MAX_FDS - 4}: pass fewer queues, pipes or files in args"
            )
        try:
            cwd: str | None = os.getcwd()
        except OSError:  # deleted under the job: the rank stays in the server's
            cwd = None
        body = pickle.dumps((cwd, spec), 5)
        status, theirs = socket.socketpair()
        spec_fd, spec_end = _fresh._spec_channel()
        plugin.mark_parent_only(status.fileno())
        fds = [theirs.fileno(), spec_fd, *standard, *spec.fds]
        request = struct.pack(REQUEST, FORK, flags, len(fds), spec.rank)
        try:
            with self.lock:
                _send_fds(self.control, request, fds)
        except OSError as exc:
            for end in (status, spec_end):
                _fresh._close_end(end)
            raise _ServerGone(
                f"the fork server (pid {self.pid}) is gone ({exc.strerror or exc})"
            ) from exc
        finally:
            theirs.close()
            os.close(spec_fd)
        writer = _fresh._send(spec_end, [_fresh._frame(body), body])
        try:
            status.settimeout(FORK_TIMEOUT)
            (pid,) = struct.unpack(CODE, _recv_exact(status, 4, "fork the rank", self))
            status.setblocking(False)
        except BaseException:
            _fresh._close_end(status)
            raise
        with self.lock:
            self.live += 1
        # A bare number from here on: a socket object that a fork of the job collected
        # would close that number there, whatever file had taken it by then.
        return ForkServerHandle(self, pid, status.detach(), writer)

    def released(self) -> None:
        with self.lock:
            self.live -= 1
            last = self.retired and self.live == 0
        if last:
            # It ends once it has reaped that rank, which it has: the code came from it.
            self._reap(wait=5.0)

    def retire(self) -> None:
        """No more jobs: end now if no rank of it runs, else once its last rank has ended."""
        self.retired = True
        if self.live == 0 or not self.alive():
            self.shut_down()
            return
        try:
            with self.lock:
                self.control.sendall(struct.pack(REQUEST, RETIRE, 0, 0, 0), _NOSIGNAL)
        except OSError:
            pass
        self._close_control()

    def shut_down(self) -> None:
        """End the server now: its control socket's end-of-file tells it to."""
        self._close_control()
        self._reap(wait=5.0)

    def _close_control(self) -> None:
        if self.control.fileno() >= 0:
            plugin.unmark_parent_only(self.control.fileno())
            self.control.close()

    def disown(self) -> None:
        """Forget the server in a fork of the job, where it is neither a child nor reachable.

        The control socket was closed there already, as the job's own
        (``plugin.mark_parent_only``): the socket object must not close that number again
        when it is collected, by then maybe another file's. Nor may the ``Popen`` warn that
        its process still runs, or wait for it: it is not this process's child.
        """
        self.control.detach()
        if self.process.returncode is None:
            self.process.returncode = _NOT_OURS
        plugin.unmark_helper_process(self.pid)

    def _reap(self, wait: float = 0.0) -> None:
        import subprocess

        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            if not wait:
                return
            self.process.kill()
            self.process.wait()
        plugin.unmark_helper_process(self.pid)


# The exit code a fork of the job gives its copy of the server's Popen: none is known.
_NOT_OURS = -1 << 16

_lock = threading.Lock()
_current: _Server | None = None
_retired: list[_Server] = []


def server_for(preload: tuple[str, ...]) -> _Server:
    """The running server for a job with ``preload``, started (or started again) if need be."""
    global _current
    import pickle

    header = _fresh.header_fields()
    header["preload"] = list(preload)
    header["warm"] = [*_WARM, *(m for m in ("cloudpickle",) if m in sys.modules)]
    data = pickle.dumps(header, 2)
    key = (sys.executable, tuple(_interpreter_flags()), data, tuple(sorted(os.environ.items())))
    with _lock:
        for old in _retired:
            old._reap()
        _retired[:] = [old for old in _retired if old.process.returncode is None]
        server = _current
        if server is not None and (server.key != key or not server.alive()):
            server.retire()
            if server.process.returncode is None:
                _retired.append(server)
            _current = server = None
        if server is None:
            server = _current = _Server(key, data)
        return server


def server_pids() -> list[int]:
    """The pids of this process's fork servers that have not been reaped, retiring ones too."""
    with _lock:
        servers = [_current] if _current is not None else []
        return [s.pid for s in [*servers, *_retired] if s.process.returncode is None]


def _forget_in_child() -> None:
    # A fork of the job (a fork worker, the program's own os.fork()) has no server, and a
    # lock some other thread held would never be released.
    global _current, _lock
    for server in [_current, *_retired]:
        if server is not None:
            server.disown()
    _current = None
    _retired.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _at_exit() -> None:
    # Ended now unless a rank still runs: a job the program did not join is waited for at
    # exit (spawnkit._context), and its ranks need their server until then. Either way the
    # control socket closes with the process, and the server ends.
    with _lock:
        for server in [_current, *_retired]:
            if server is not None and server.owner == os.getpid() and server.live == 0:
                server.shut_down()


import atexit  # noqa: E402 - registered after the job's own at-exit wait exists

atexit.register(_at_exit)


def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    if sys.platform == "win32":  # no descriptor passing (see unavailable_reason)
        raise OSError("descriptors cannot be passed over a socket on Windows")
    else:  # noqa: RET506 - a platform branch type checkers understand
        socket.send_fds(sock, [data], fds, _NOSIGNAL)


@final
class ForkServerHandle:
    """A rank the fork server forked: a :class:`spawnkit.plugin.ProcessHandle`.

    It is not this process's child: its exit code comes down its status socket. A pidfd
    says whether it still runs after the server died with the code.
    """

    def __init__(
        self, server: _Server, pid: int, status: int, writer: threading.Thread | None
    ) -> None:
        self._server = server
        self._pid = pid
        self._status: int | None = status
        self._writer = writer
        self._received = b""
        self._code: int | None = None
        # Why the exit status is unknown, once it is (core reads it).
        self.status_lost: str | None = None
        self._pidfd = _fresh._open_pidfd(pid)
        if self._pidfd is not None:
            plugin.mark_parent_only(self._pidfd)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def sentinel(self) -> int:
        if self.status_lost is not None and self._pidfd is not None:
            return self._pidfd  # the status socket is at end-of-file for good
        assert self._status is not None
        return self._status

    def poll(self) -> int | None:
        if self._code is not None:
            return self._code
        if self.status_lost is None:
            assert self._status is not None
            try:
                data = os.read(self._status, 4 - len(self._received))
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            if data:
                self._received += data
                if len(self._received) < 4:
                    return None
                self._code = struct.unpack(CODE, self._received)[0]
                return self._code
            self.status_lost = (
                f"the fork server (pid {self._server.pid}) that started it died while the "
                "job ran, and the worker's exit status died with it"
            )
        if self._pidfd is not None and not readable(self._pidfd):
            return None  # still running: it stops itself, its parent being gone
        self._code = 255
        return self._code

    def close(self) -> None:
        if self._status is None:
            return
        if self._writer is not None:
            # The rank has ended, so a pending write fails at once; bounded all the same.
            self._writer.join(timeout=5.0)
        _fresh._close_end(self._status)
        self._status = None
        if self._pidfd is not None:
            plugin.unmark_parent_only(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._server.released()


class ForkServerBackend(plugin.LocalBackend):
    """Forks every rank from a warm server process of spawnkit's own.

    Args:
        preload: modules the server imports once, so that every rank starts with them
            loaded (``["numpy", "torch"]``). The job's ``__main__`` is always preloaded.
    """

    def __init__(self, preload: Iterable[str] | None = None) -> None:
        self._preload = check_preload(preload)
        self._server = server_for(self._preload)

    def start_process(self, spec: plugin.WorkerSpec) -> ForkServerHandle:
        try:
            return self._server.start(spec)
        except _ServerGone:
            if not self._server.exited():
                raise  # not gone after all: a server that is stuck is not replaced
        # Killed since the job began (or the previous one ended): a new one takes over.
        self._server = server_for(self._preload)
        return self._server.start(spec)
