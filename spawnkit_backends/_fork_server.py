"""The job's side of the ``forkserver`` backend: its fork server, and a handle per rank.

The server (``_zygote``) is a fresh interpreter that has imported what
every worker needs, the job's ``__main__`` (as ``__mp_main__``) and the ``preload`` modules,
and forks a rank per request. One server serves every job of this process whose preload
list, interpreter, ``sys.path``, ``sys.argv``, ``__main__``, environment and credentials (its
key) are the same; jobs of other keys, in other threads, have their own. A server nothing
uses is retired (ended) once a job asks for another key, so it ends with its last rank.
It ends with this process: its control socket reaches end-of-file however the process ends.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, final

import spawnkit
from spawnkit import plugin

from . import _fresh
from ._fds import identity, readable
from ._zygote_protocol import (
    CODE,
    FAILED,
    FORK,
    HAS_STDERR,
    HAS_STDOUT,
    MAX_FDS,
    READY,
    REQUEST,
    process_state,
)

if TYPE_CHECKING:
    import subprocess

    from ._zygote_protocol import State

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
        except TimeoutError:
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
    """One fork server process and the control socket to it, for the jobs of one key.

    Created empty, in the registry; the first job that needs it starts the process
    (:meth:`ensure_started`), and jobs of its key wait for that start, others do not.
    """

    def __init__(self, key: tuple[Any, ...], header: bytes) -> None:
        self.key = key
        self._header = header
        self.owner = os.getpid()
        # Ranks it forked whose handles are open, and starts under way (one each): while
        # any is, it is in use and stays. Changed under ``lock``, read under ``_lock``.
        self.live = 0
        self.lock = threading.Lock()
        self._starting = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.control: socket.socket
        self._control_id: tuple[int, int, int] | None = None

    def ensure_started(self, deadline: float | None) -> None:
        """Start the server unless it runs; waits (bounded by ``deadline``) for another start."""
        if not self._starting.acquire(timeout=_left(deadline, READY_TIMEOUT)):
            raise spawnkit.LaunchError(
                "the job's deadline passed while another job started the fork server it needs"
            )
        try:
            if self.process is None:
                self._run(deadline)
        finally:
            self._starting.release()

    def _run(self, deadline: float | None) -> None:
        import subprocess

        if not _left(deadline, READY_TIMEOUT):
            raise spawnkit.LaunchError("the job's deadline passed before its fork server started")
        ours, theirs = socket.socketpair()
        fd = _fresh.above_stdio(theirs.detach())
        where = [_fresh.spawnkit_dir(), os.path.dirname(os.path.dirname(SERVER))]
        import_path = os.pathsep.join(dict.fromkeys(where))
        argv = [sys.executable, *_interpreter_flags(), SERVER, import_path]
        try:
            process: subprocess.Popen[bytes] = subprocess.Popen(
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
        # The socket first: a job in another thread that sees the process looks at it.
        self.control = ours
        # Its number may be closed by the program (os.closerange) and reused for a file of
        # its own: what it names is checked against this before every use (_ours).
        self._control_id = identity(ours.fileno())
        plugin.mark_parent_only(ours.fileno())
        self.process, self.pid = process, process.pid
        plugin.mark_helper_process(self.pid)
        try:
            self._handshake(self._header, deadline)
        except BaseException:
            # Half started (importing a slow __main__, say): nothing of it is worth waiting for.
            self._close_control()
            if process.returncode is None:
                process.kill()
            process.wait()
            plugin.unmark_helper_process(self.pid)
            self.process = None  # the next job of this key starts it afresh
            raise

    def _handshake(self, header: bytes, deadline: float | None) -> None:
        ready = _left(deadline, READY_TIMEOUT)
        if not ready:
            raise spawnkit.LaunchError(
                f"the fork server (pid {self.pid}) did not get ready before the job's deadline"
            )
        self.control.settimeout(ready)
        try:
            self.control.sendall(_fresh.frame(header) + header, _NOSIGNAL)
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

        if self.process is None:
            return True
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_note(self) -> str:
        if self.process is None or not self.exited():
            return ""
        code = self.process.returncode
        return f" (exit status {code}; its stderr, the job's, says why)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, spec: plugin.WorkerSpec, state: State) -> ForkServerHandle:
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
        body = pickle.dumps((cwd, state, spec), 5)
        status, theirs = socket.socketpair()
        spec_fd, spec_end = _fresh.spec_channel()
        plugin.mark_parent_only(status.fileno())
        fds = [theirs.fileno(), spec_fd, *standard, *spec.fds]
        request = struct.pack(REQUEST, FORK, flags, len(fds), spec.rank)
        try:
            with self.lock:
                _send_fds(self.control, request, fds)
        except OSError as exc:
            for end in (status, spec_end):
                _fresh.close_end(end)
            raise _ServerGone(
                f"the fork server (pid {self.pid}) is gone ({exc.strerror or exc})"
            ) from exc
        finally:
            theirs.close()
            os.close(spec_fd)
        writer = _fresh.send(spec_end, [_fresh.frame(body), body])
        try:
            # Not cut short by the job's deadline: the rank may be forked by now, and only
            # its pid lets the job stop it.
            status.settimeout(FORK_TIMEOUT)
            (pid,) = struct.unpack(CODE, _recv_exact(status, 4, "fork the rank", self))
            status.setblocking(False)
        except BaseException:
            _fresh.close_end(status)
            raise
        with self.lock:
            self.live += 1
        # A bare number from here on: a socket object that a fork of the job collected
        # would close that number there, whatever file had taken it by then.
        return ForkServerHandle(self, pid, status.detach(), writer)

    def usable(self) -> bool:
        """Whether a job may use it: not started yet, or running with its socket ours."""
        return self.process is None or (self.alive() and self._ours())

    def _ours(self) -> bool:
        fd = self.control.fileno()
        return fd >= 0 and identity(fd) == self._control_id

    def released(self) -> None:
        """A rank it forked was collected, or a start ended: it goes once nothing uses it.

        It stays only for the key a job asked for last (see :func:`_acquire`).
        """
        with _lock:
            with self.lock:
                self.live -= 1
            if self.live or self.owner != os.getpid():
                return
            if _servers.get(self.key) is self and self.key == _latest and self.alive():
                return
            _retire(self)
        self.shut_down()

    def shut_down(self) -> None:
        """End the server now: its control socket's end-of-file tells it to."""
        if self.process is None:
            return
        self._close_control()
        self._reap(wait=5.0)

    def _close_control(self) -> None:
        fd = self.control.fileno()
        if fd < 0:
            return
        plugin.unmark_parent_only(fd)
        if self._ours():
            self.control.close()
        else:
            # The program closed it and the number is one of its own files now: forget it.
            self.control.detach()

    def disown(self) -> None:
        """Forget the server in a fork of the job, where it is neither a child nor reachable.

        The control socket was closed there already, as the job's own
        (``plugin.mark_parent_only``): the socket object must not close that number again
        when it is collected, by then maybe another file's. Nor may the ``Popen`` warn that
        its process still runs, or wait for it: it is not this process's child.
        """
        if self.process is None:
            return
        self.control.detach()
        if self.process.returncode is None:
            self.process.returncode = _NOT_OURS
        plugin.unmark_helper_process(self.pid)

    def _reap(self, wait: float = 0.0) -> None:
        import subprocess

        if self.process is None:
            return
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            if not wait:
                return
            try:
                self.process.kill()
            except PermissionError:
                return  # the job gave up the rights it started it with; it ends on EOF
            self.process.wait()
        plugin.unmark_helper_process(self.pid)


def _left(deadline: float | None, bound: float) -> float:
    """How long a wait of a rank's start may take: ``bound``, less (0 once passed) if the
    job's deadline (``spec.deadline``) is nearer."""
    if deadline is None:
        return bound
    return max(0.0, min(bound, deadline - time.monotonic()))


# The exit code a fork of the job gives its copy of the server's Popen: none is known.
_NOT_OURS = -1 << 16

# The registry: a server per key that jobs use now or used last. Jobs in several threads
# with different keys each keep theirs; a server is retired only once nothing uses it and a
# job asked for another key, so it never goes from under a job, and at most one idle server
# (the last key's) stays: each is an interpreter holding its preload (torch: a gigabyte).
_lock = threading.Lock()
_servers: dict[tuple[Any, ...], _Server] = {}
_latest: tuple[Any, ...] | None = None
# Servers no job may use any more, until they are reaped: ending, or dead but still in use.
_retired: list[_Server] = []


def _retire(server: _Server) -> None:
    # Under _lock.
    if _servers.get(server.key) is server:
        del _servers[server.key]
    if server.process is not None and server not in _retired:
        _retired.append(server)


def _key(preload: tuple[str, ...]) -> tuple[tuple[Any, ...], bytes]:
    """What a server must share with a job to serve it, and the header that starts one."""
    import pickle

    header = _fresh.header_fields()
    header["preload"] = list(preload)
    header["warm"] = [*_WARM, *(m for m in ("cloudpickle",) if m in sys.modules)]
    data = pickle.dumps(header, 2)
    # Its ranks get the server's credentials, not the job's: a job that dropped privileges
    # (setuid, setgid, setgroups) must not have ranks with the rights it gave up, nor ranks
    # its terminate() cannot signal.
    ids: tuple[object, ...] = ()
    if sys.platform != "win32":  # no fork server there; no such ids either
        ids = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), tuple(sorted(os.getgroups())))
    environ = tuple(sorted(os.environ.items()))
    return (sys.executable, tuple(_interpreter_flags()), data, environ, ids), data


def _acquire(key: tuple[Any, ...], header: bytes) -> _Server:
    """The server for ``key``, counted as in use (``released()`` undoes it); maybe unstarted."""
    global _latest
    with _lock:
        for old in _retired:
            old._reap()
        _retired[:] = [old for old in _retired if old.alive()]
        _latest = key
        stale = []
        server = _servers.get(key)
        if server is not None and not server.usable():
            _retire(server)
            if server.live == 0:
                stale.append(server)
            server = None
        for other in list(_servers.values()):
            if other.live == 0 and other is not server:
                _retire(other)
                stale.append(other)
        if server is None:
            server = _servers[key] = _Server(key, header)
        with server.lock:
            server.live += 1
    for old in stale:
        old.shut_down()
    return server


def _every_server() -> list[_Server]:
    # Under _lock.
    return [*_servers.values(), *_retired]


def server_pids() -> list[int]:
    """The pids of this process's fork servers that have not been reaped, retiring ones too."""
    with _lock:
        running = [s for s in _every_server() if s.process and s.process.returncode is None]
        return [s.pid for s in running]


def _forget_in_child() -> None:
    # A fork of the job (a fork worker, the program's own os.fork()) has no server, and a
    # lock some other thread held would never be released.
    global _lock, _latest
    for server in _every_server():
        server.disown()
    _servers.clear()
    _retired.clear()
    _latest = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _at_exit() -> None:
    # Ended now unless a rank still runs: a job the program did not join is waited for at
    # exit (spawnkit._context), and its ranks need their server until then. Either way the
    # control socket closes with the process, and the server ends.
    with _lock:
        for server in _every_server():
            if server.owner == os.getpid() and server.live == 0:
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
        self._pidfd = _fresh.open_pidfd(pid)
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
        _fresh.close_end(self._status)
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
        # Taken now, for the whole job: what the program changes while its ranks start
        # (its environment, its credentials) is the next job's.
        self._key, self._header = _key(check_preload(preload))
        # As of this job, not of the server's start: its ranks are the job's children as
        # spawned ones would be, whatever the program changed since (umask, limits, signals).
        self._state = process_state()

    def start_process(self, spec: plugin.WorkerSpec) -> ForkServerHandle:
        try:
            return self._start_process(spec)
        except _ServerGone as gone:  # the class is this module's business, not the program's
            raise spawnkit.LaunchError(str(gone)) from None

    def _start_process(self, spec: plugin.WorkerSpec) -> ForkServerHandle:
        # A server is looked up for every rank, not kept: one that died, or whose socket
        # the program closed, since the job's previous rank is replaced.
        server = _acquire(self._key, self._header)
        try:
            server.ensure_started(spec.deadline)
            try:
                return server.start(spec, self._state)
            except _ServerGone:
                if not server.exited():
                    raise  # not gone after all: a server that is stuck is not replaced
        finally:
            server.released()
        # Killed since it was looked up: a new one takes over.
        server = _acquire(self._key, self._header)
        try:
            server.ensure_started(spec.deadline)
            return server.start(spec, self._state)
        finally:
            server.released()
