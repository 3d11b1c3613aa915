"""The ``forkserver`` backend's server (a zygote): a fresh interpreter that forks ranks.

Run by path, ``python [flags] _zygote.py IMPORT_PATH CONTROL_FD JOB_PID``; IMPORT_PATH lists
(``os.pathsep`` between) where the job found ``spawnkit`` and ``spawnkit_backends``. It reads a
header from the control socket (the job's ``sys.path``, ``sys.argv``, where its
``__main__`` is, the modules to preload), imports what every worker needs, the preload
modules and the job's ``__main__`` (as ``__mp_main__``: its guarded block does not run),
says it is ready, then forks one child per request. Each child is a rank: it reads its
spec from a descriptor of its own and calls :func:`spawnkit.plugin.run_worker`, so what
the server imported is warm in every rank and nothing is imported again.

A request (``_zygote_protocol``) brings the rank's status socket, its spec channel, the job's
stdout and stderr as they are now, and the spec's own descriptors. The server writes the
child's pid to the status socket at once, and its exit code once it has reaped it; then
closes it. The spec comes with the job's process state as of the job's start (umask, limits,
ignored signals, nice, affinity): the rank takes what differs from the server's before it
runs anything, so that it is the job's child as of now, as a ``spawn`` rank would be.

The server ends when the job's process does, however it ends: the control socket reaches
end-of-file (the job also closes it to retire a server it no longer uses), or the job's
pid is no longer its parent.
Its ranks follow it through their own parent watches. It ignores SIGINT, like every
helper of a terminal job; a Ctrl-C is the job's to handle. It ends with ``os._exit``: the
threads a preloaded module started (a library's pool) are not waited for.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# POSIX only: the backend is unavailable elsewhere, so nothing imports this module there.
assert sys.platform != "win32"

# spawnkit_backends._zygote_protocol, once main() has found it where the job did.
P: Any = None


def _import_boot(import_path: str) -> Any:
    # As fresh_worker does: the job's spawnkit, found where the job found it, then only
    # through the packages' own __path__.
    global P
    where = import_path.split(os.pathsep)
    sys.path[:0] = where
    try:
        import spawnkit.plugin

        from spawnkit_backends import _zygote_protocol
        from spawnkit_backends._boot import fresh_worker

        assert spawnkit.plugin.WorkerSpec is not None
        P = _zygote_protocol
    finally:
        del sys.path[: len(where)]
    return fresh_worker


def _preload(header: dict[str, Any]) -> None:
    import importlib

    from spawnkit import plugin

    for name in header["warm"]:
        try:
            importlib.import_module(name)
        except ImportError:  # only to save the ranks time: one that needs it says why
            pass
    for name in header["preload"]:
        importlib.import_module(name)
    try:
        plugin.load_main(header["main"], lazy=False)
    except BaseException:  # noqa: BLE001, S110 - the stand-in stays: each rank tries again
        pass


def _send_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _recv_request(control: Any) -> tuple[bytes, list[int]]:
    import socket

    data, fds, flags, _ = socket.recv_fds(control, P.REQUEST_SIZE, P.MAX_FDS)
    if flags & getattr(socket, "MSG_CTRUNC", 0):
        for fd in fds:
            os.close(fd)
        raise OSError("a request's descriptors were cut short")
    while data and len(data) < P.REQUEST_SIZE:  # a stream: the rest comes without descriptors
        more = control.recv(P.REQUEST_SIZE - len(data))
        if not more:
            break
        data += more
    return data, list(fds)


class Server:
    """The fork server's state: its control socket, its children and their status sockets."""

    def __init__(self, control: Any, job_pid: int) -> None:
        import signal

        self.control = control
        self.job_pid = job_pid
        self.children: dict[int, int] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # Set, not inherited: a job that ignores SIGCHLD would have its ranks reaped by
        # the kernel and their exit codes lost.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.poller: Any = None
        # What every rank inherits, and keeps where the job's state is the same.
        self.state: Any = None
        self.job_fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.job_fd = os.pidfd_open(job_pid)
            except OSError:  # an old kernel, or gone already: getppid() tells
                self.job_fd = None

    def own_fds(self) -> list[int]:
        fds = [self.control.fileno(), self.wake_r, self.wake_w, *self.children.values()]
        return fds if self.job_fd is None else [*fds, self.job_fd]

    def job_gone(self) -> bool:
        return os.getppid() != self.job_pid

    def serve(self) -> None:
        import select

        self.poller = poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        if self.job_fd is not None:
            poller.register(self.job_fd, select.POLLIN)
        # Without a pidfd, the job's death shows only as a new parent: look now and then.
        timeout = None if self.job_fd is not None else 200
        while True:
            try:
                ready = {fd for fd, _ in poller.poll(timeout)}
            except InterruptedError:
                continue
            if self.job_fd in ready or self.job_gone():
                return
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            self.reap()
            if self.control.fileno() in ready and not self.handle_request():
                return  # end-of-file: the job's process is gone

    def handle_request(self) -> bool:
        import struct

        data, fds = _recv_request(self.control)
        if not data:
            return False  # end-of-file: the job's process is gone
        if len(data) < P.REQUEST_SIZE:
            raise OSError(f"a request of {len(data)} bytes, not {P.REQUEST_SIZE}")
        kind, flags, count, rank = struct.unpack(P.REQUEST, data)
        if kind != P.FORK or len(fds) != count or count < 2:
            for fd in fds:
                os.close(fd)
            raise OSError(f"a malformed request: {kind!r} with {len(fds)} of {count} descriptors")
        self.fork(rank, flags, fds)
        return True

    def fork(self, rank: int, flags: int, fds: list[int]) -> None:
        import _signal  # type: ignore[import-not-found]  # no stubs; see _all_signals
        import struct
        import warnings

        status, spec_fd, *rest = fds
        out = rest.pop(0) if flags & P.HAS_STDOUT else None
        err = rest.pop(0) if flags & P.HAS_STDERR else None
        # Born with every signal blocked: a SIGTERM from the job waits until the rank has
        # its own handler (its spec's mask goes back in spawnkit._child).
        previous = _signal.pthread_sigmask(_signal.SIG_BLOCK, _all_signals())
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork() in a process with threads. The threads are
                # those of preloaded modules (a BLAS pool); the ranks start none before fn,
                # and the warning would speak of the server, not of the job. Both processes
                # leave this block, so a rank keeps its own filters.
                warnings.filterwarnings(
                    "ignore",
                    message=r".*multi-threaded, use of fork\(\)",
                    category=DeprecationWarning,
                )
                pid = os.fork()
            if pid == 0:
                _run_child(self, status, spec_fd, out, err, rest)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, previous)
        try:
            # Both sides: the group exists before the job hears the pid and may signal it.
            os.setpgid(pid, pid)
        except OSError:
            pass
        for fd in (spec_fd, out, err, *rest):
            if fd is not None:
                os.close(fd)
        try:
            _send_all(status, struct.pack(P.CODE, pid))
        except OSError:  # the job is gone; the rank finds out through its watch
            pass
        self.children[pid] = status

    def reap(self) -> None:
        import struct

        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status = self.children.pop(pid, None)
            if status is None:
                continue
            try:
                _send_all(status, struct.pack(P.CODE, os.waitstatus_to_exitcode(wait_status)))
            except OSError:
                pass
            os.close(status)


_ALL_SIGNALS: frozenset[int] = frozenset()


def _all_signals() -> frozenset[int]:
    # Once, and from _signal, which answers in plain ints: signal's wrappers turn every
    # number into an enum (0.25 ms for a mask of every signal), and this runs once a rank.
    global _ALL_SIGNALS
    if not _ALL_SIGNALS:
        import _signal

        _ALL_SIGNALS = frozenset(_signal.valid_signals()) - {_signal.SIGKILL, _signal.SIGSTOP}
    return _ALL_SIGNALS


def _run_child(
    server: Server, status: int, spec_fd: int, out: int | None, err: int | None, fds: list[int]
) -> NoReturn:
    """A forked rank: take its descriptors and spec, run it, exit without the server's
    ``atexit`` handlers (those of the preloaded modules are the server's)."""
    code = 1
    try:
        import signal

        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # The server's descriptors, its other ranks' status sockets among them: a copy
        # here would hide the server's death from the job, or a sibling's end.
        for fd in (*server.own_fds(), status):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for given, target in ((out, 1), (err, 2)):
            if given is not None:
                os.dup2(given, target)
                os.close(given)
        if out is not None and os.isatty(1):
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        code = _run_rank(server.state, spec_fd, fds)
    finally:
        _exit(code)


def _run_rank(base: Any, spec_fd: int, fds: list[int]) -> int:
    import pickle

    try:
        boot = sys.modules["spawnkit_backends._boot.fresh_worker"]
        cwd, state, spec = pickle.loads(boot._read_frame(spec_fd))
        os.close(spec_fd)
        _take_state(spec.rank, base, state)
        spec = spec.with_fds(fds)
        os.chdir(cwd)
        if spec.sigmask is None:
            import _signal

            _signal.pthread_sigmask(_signal.SIG_SETMASK, set())
    except BaseException as exc:  # noqa: BLE001 - reported as the rank's failure
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if fds:
            sys.modules["spawnkit_backends._boot.fresh_worker"].send_error(fds[0], exc, text)
        return 1
    from spawnkit.plugin import run_worker

    return run_worker(spec)


def _take_state(rank: int, base: Any, state: Any) -> None:
    """Make this rank's process state the job's (``_zygote_protocol.process_state``).

    It has the server's, ``base``: only what differs costs a system call, and the usual
    job differs in nothing. Limits go first, since they bound what nice and the scheduler
    may be set to. Signals end as in a new interpreter started by the job: ignored where
    the job ignores them, else the default, and Python's handler for SIGINT.
    """
    import signal

    umask, limits, ignored, nice, cpus, sched = state
    if umask != base[0]:
        os.umask(umask)
    if limits != base[1]:
        import resource

        had = {number: (soft, hard) for number, soft, hard in base[1]}
        for number, soft, hard in limits:
            if had.get(number) != (soft, hard):
                name = P.limit_names().get(number, str(number))
                wanted = (soft, hard)
                _change(rank, name, wanted, had.get(number), resource.setrlimit, number, wanted)
    if sys.platform == "linux" and sched is not None and sched != base[5]:
        param = os.sched_param(sched[1])
        _change(
            rank, "scheduling policy", sched, base[5], os.sched_setscheduler, 0, sched[0], param
        )
    if nice != base[3]:
        _change(rank, "nice value", nice, base[3], os.setpriority, os.PRIO_PROCESS, 0, nice)
    if sys.platform == "linux" and cpus is not None and cpus != base[4]:
        _change(rank, "CPU affinity", set(cpus), set(base[4] or ()), os.sched_setaffinity, 0, cpus)
    # The server ignores SIGINT, its own way, whatever the job does: not a difference.
    for number in set(ignored).symmetric_difference(base[2]) - {signal.SIGINT}:
        signal.signal(number, signal.SIG_IGN if number in ignored else signal.SIG_DFL)
    interrupt = signal.SIG_IGN if signal.SIGINT in ignored else signal.default_int_handler
    signal.signal(signal.SIGINT, interrupt)


def _change(rank: int, what: str, wanted: object, had: object, *call: Any) -> None:
    """``call[0](*call[1:])``, one change of :func:`_take_state`; if the rank cannot make
    it, an error that says which setting, and what to do."""
    try:
        call[0](*call[1:])
    except (OSError, ValueError) as exc:
        import spawnkit

        raise spawnkit.LaunchError(
            f"rank {rank} cannot take the job's {what}, {wanted!r} ({exc}): it is forked "
            f"from the fork server (pid {os.getppid()}), which has {had!r}. Make the change "
            "in the rank's function instead, or use backend 'spawn'"
        ) from exc


def _exit(code: int) -> NoReturn:
    # As a multiprocessing fork child ends: its finalizers (queue feeder threads flush
    # there), the standard streams, then out without the inherited atexit handlers.
    try:
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util._exit_function()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # noqa: BLE001, S110 - on the way out, nothing left to tell
        pass
    os._exit(code)


def _report(control: Any, kind: bytes, text: str = "") -> None:
    body = text.encode("utf-8", "replace")
    _send_all(control.fileno(), kind + len(body).to_bytes(8, "big") + body)


def main(argv: list[str]) -> int:
    """Entry point: ``argv`` is ``[script, import path, control fd, job pid]``."""
    import signal

    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and sys.path[0] and os.path.realpath(sys.path[0]) == here:
        del sys.path[0]
    # Started while the job held signals, or by one that blocks some: the server's own
    # work needs SIGCHLD, and its ranks get the job's mask from their spec.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import pickle
    import socket

    control = socket.socket(fileno=int(argv[2]))
    job_pid = int(argv[3])
    try:
        boot = _import_boot(argv[1])
        header = pickle.loads(boot._read_frame(control.fileno()))
        boot._set_path(header["path"])
        sys.argv[:] = header["argv"]
        from spawnkit import plugin

        plugin.load_main(header["main"])  # what the preload modules see as __main__
        _preload(header)
    except BaseException as exc:  # noqa: BLE001 - the job raises it
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            _report(control, P.FAILED, text)
        except OSError:
            pass
        return 1
    server = Server(control, job_pid)
    if server.job_gone():
        return 0
    server.state = P.process_state()
    _report(control, P.READY)
    server.serve()
    return 0


if __name__ == "__main__":
    _BOOT_MODULE = sys.modules["__main__"]  # kept alive after __main__ is replaced
    code = 1
    try:
        code = main(sys.argv)
    except BaseException:  # noqa: BLE001 - told on the job's stderr, as an uncaught one is
        import traceback

        traceback.print_exc()
    finally:
        # Not through the interpreter's shutdown: it waits for every non-daemon thread,
        # and one a preloaded module started (a library's pool) would keep the server on
        # after the job, forever or until the job's exit gives up on it.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os._exit(code)
