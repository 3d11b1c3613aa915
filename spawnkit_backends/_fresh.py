"""A fresh interpreter per rank from ``subprocess.Popen``, no multiprocessing: the building block.

:class:`FreshInterpreterBackend` is the built-in ``subprocess`` backend, and what a plugin
subclasses to start its interpreters with a twist: a command in front (``taskset``,
``numactl``, a container's ``exec``) through :meth:`~FreshInterpreterBackend.command_prefix`,
or ``Popen`` options per rank (another user, a umask) through
:meth:`~FreshInterpreterBackend.popen_options`.

The parent starts ``[prefix] python [interpreter_args] fresh_worker.py RANK SPEC RESULT
STARTED`` (three descriptor numbers) and sends a header and the pickled spec down a socket
pair that only that worker inherits; the worker reads them and calls
:func:`plugin.run_worker`. Options choose the interpreter, its flags, environment and
working directory. The ``forkserver`` backend's server boots from the same header and
takes each rank's spec down the same channel (``_fork_server``).

``spawnkit.plugin`` exports the class: it lives here, with the other building blocks, and
uses only public names, as a third-party backend would.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, final

import spawnkit
from spawnkit import plugin

if TYPE_CHECKING:
    import socket
    import subprocess

__all__ = ["FreshInterpreterBackend", "SubprocessHandle", "unavailable_reason"]

# The built-in backend's name; a subclass names itself (FreshInterpreterBackend.name).
NAME = "subprocess"
OPTIONS = ("cwd", "executable", "interpreter_args")
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_boot", "fresh_worker.py")
# The header is plain data, readable by any Python 3 (so an old one can say why it cannot
# go on); the spec is read only by an interpreter spawnkit supports, all of which know 5.
_HEADER_PROTOCOL = 2
_SPEC_PROTOCOL = 5
# Interpreter options that would replace the worker script as the program to run.
_PROGRAM_OPTIONS = frozenset({"-c", "-m", "-"})


def unavailable_reason() -> str | None:
    """Why fresh interpreters cannot be started here, or ``None`` if they can."""
    if sys.platform in ("emscripten", "wasi"):
        return f"{sys.platform} cannot start processes"
    if not os.path.isfile(WORKER):
        return (
            f"its worker script {WORKER} is not a file (spawnkit imported from a zip "
            "archive?); install spawnkit as files"
        )
    return None


# -- options ------------------------------------------------------------------------------


def _fail(message: str, error: type[spawnkit.ConfigError] | None = None) -> NoReturn:
    # The backend's name goes in front where the options are checked (see __init__).
    raise (error or spawnkit.ConfigError)(message)


def _check_executable(executable: object) -> str:
    if executable is None:
        if not sys.executable:
            _fail(
                "sys.executable is empty (an embedded interpreter?), so there is no default "
                "interpreter; pass executable= the path of a Python interpreter"
            )
        return sys.executable
    if not isinstance(executable, (str, os.PathLike)):
        _fail(
            f"executable must be a path (str or os.PathLike), not {type(executable).__name__} "
            f"{executable!r}",
            spawnkit.InvalidArgumentError,
        )
    path = os.fspath(executable)
    if not isinstance(path, str) or not path:
        _fail(f"executable must be a non-empty str path, not {executable!r}")
    fix = f"pass executable= the path of a Python interpreter (default: {sys.executable!r})"
    if os.path.dirname(path) == "":
        import shutil

        found = shutil.which(path)
        if found is None:
            raise spawnkit.LaunchError(f"executable {path!r} is not on PATH; {fix}")
        path = found
    path = os.path.abspath(path)
    if not os.path.exists(path):
        problem = "does not exist"
    elif os.path.isdir(path):
        problem = "is a directory"
    elif not os.access(path, os.X_OK):
        problem = "is not executable"
    else:
        return path
    raise spawnkit.LaunchError(f"executable {path!r} {problem}; {fix}")


def _check_interpreter_args(args: object) -> tuple[str, ...]:
    if args is None:
        return ()
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        _fail(
            f"interpreter_args must be a list of str, one option per item, such as "
            f'["-X", "faulthandler"], not {args!r}',
            spawnkit.InvalidArgumentError,
        )
    for arg in args:
        if not isinstance(arg, str):
            _fail(
                f"interpreter_args items must be str, not {type(arg).__name__} {arg!r}",
                spawnkit.InvalidArgumentError,
            )
        if arg in _PROGRAM_OPTIONS:
            _fail(
                f"interpreter_args may not contain {arg!r}: spawnkit supplies the program "
                "(its worker script); pass only interpreter options such as -X, -W, -O, -I"
            )
    return tuple(args)


def _check_cwd(cwd: object) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, (str, os.PathLike)):
        _fail(
            f"cwd must be a directory path (str or os.PathLike), not {type(cwd).__name__} {cwd!r}",
            spawnkit.InvalidArgumentError,
        )
    path = os.fspath(cwd)
    if not isinstance(path, str) or not os.path.isdir(path):
        _fail(f"cwd {cwd!r} is not an existing directory")
    return os.path.abspath(path)


# -- what the worker needs to know before it can read the spec ----------------------------

_install_dirs: tuple[str, ...] | None = None


def _installation() -> tuple[str, ...]:
    """Directories that belong to this interpreter: its standard library and site-packages."""
    global _install_dirs
    if _install_dirs is None:
        import site
        import sysconfig

        dirs = {sysconfig.get_path(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        dirs.update(getattr(site, "getsitepackages", list)())
        if site.ENABLE_USER_SITE is not False:
            dirs.add(site.getusersitepackages())
        if sys.platform == "win32":  # the DLLs folder and the prefix itself are on sys.path
            dirs.add(os.path.join(sys.base_exec_prefix, "DLLs"))
            dirs.update((sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix))
        _install_dirs = tuple(sorted(os.path.normcase(os.path.abspath(d)) for d in dirs if d))
    return _install_dirs


def _is_installation(entry: str) -> bool:
    path = os.path.normcase(entry)
    zipped = f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
    if os.path.basename(path) == zipped:
        return True
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in _installation())


def _path_for_worker() -> list[str | None]:
    """The parent's ``sys.path`` for a worker: ``None`` where the interpreter's own dirs were.

    The worker's interpreter has its own standard library and site-packages, possibly of
    another version; it puts them where the ``None`` is. The rest is the job's: the script's
    directory, the current directory that ``spawnkit run`` adds, PYTHONPATH, editable
    installs, anything the program appended. Relative entries are resolved here, since the
    worker may start in another directory.
    """
    entries: list[str | None] = []
    found: list[object] = list(sys.path)  # typed list[str]; programs put Paths there too
    for entry in found:
        if not isinstance(entry, (str, os.PathLike)):
            continue
        path: object = os.path.abspath(os.fspath(entry))
        if not isinstance(path, str):
            continue  # a bytes entry: the import system ignores those too
        kept = None if _is_installation(path) else path
        if kept not in entries:
            entries.append(kept)
    return entries


def spawnkit_dir() -> str:
    """The directory this spawnkit is imported from (its package's parent)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(spawnkit.__file__)))


def header_fields() -> dict[str, Any]:
    """What a fresh interpreter needs before it can read a spec: paths, argv, ``__main__``."""
    return {
        "spawnkit_path": [spawnkit_dir()],
        "path": _path_for_worker(),
        "argv": list(sys.argv),
        "main": plugin.main_reference(),
        "python": sys.version.split()[0],
    }


def _header() -> bytes:
    import pickle

    return pickle.dumps(header_fields(), _HEADER_PROTOCOL)


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big")


# -- sending the job ------------------------------------------------------------------------


def spec_channel() -> tuple[int, int | socket.socket]:
    """A one-way channel for the spec: the worker's descriptor and the parent's end.

    A socket pair on POSIX, written with MSG_NOSIGNAL: a worker that dies before reading
    must cost the parent an EPIPE, never a SIGPIPE (a program may have restored its default
    action, which is to die). Windows has no SIGPIPE and cannot pass sockets as plain
    handles: a pipe there.
    """
    if sys.platform == "win32":
        return os.pipe()
    else:
        import socket

        parent, child = socket.socketpair()
        return child.detach(), parent


def above_stdio(fd: int) -> int:
    """``fd``, or a copy numbered 3 or more (``fd`` closed).

    A program started with a standard stream closed gets 0-2 from pipe(); passed to the
    worker under that number, the descriptor would be replaced by the worker's stdin.
    """
    if sys.platform == "win32" or fd > 2:  # platform first: type checkers read it
        return fd
    else:
        import fcntl

        try:
            return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        finally:
            os.close(fd)


def close_end(end: int | socket.socket) -> None:
    plugin.unmark_parent_only(end if isinstance(end, int) else end.fileno())
    if isinstance(end, int):
        os.close(end)
    else:
        end.close()


def send(end: int | socket.socket, chunks: list[bytes]) -> threading.Thread | None:
    """Write ``chunks`` to ``end`` and close it, without waiting for the worker to read.

    What fits in the buffer goes now; the rest goes from a thread, so that a rank with a big
    payload does not hold up the next rank's start. Returns that thread, if one was needed.
    """
    views = [memoryview(c) for c in chunks if c]
    if not isinstance(end, int):  # no non-blocking pipes on Windows before 3.12
        end.setblocking(False)
        try:
            _write_all(end, views)
        except BlockingIOError:
            end.setblocking(True)
        except OSError:  # the worker is gone already; its exit status tells why
            views.clear()
        if not views:
            close_end(end)
            return None
    return plugin.start_helper_thread(_write_rest, end, views, name="spawnkit-subprocess-spec")


def _write_all(end: int | socket.socket, views: list[memoryview]) -> None:
    """Write ``views`` in order, consuming them as they go out."""
    import socket

    flags = getattr(socket, "MSG_NOSIGNAL", 0)  # macOS has none; SO_NOSIGPIPE is not exposed
    while views:
        view = views[0]
        sent = os.write(end, view) if isinstance(end, int) else end.send(view, flags)
        views[0] = view[sent:]
        if not views[0]:
            views.pop(0)


def _write_rest(end: int | socket.socket, views: list[memoryview]) -> None:
    try:
        _write_all(end, views)
    except OSError:  # the worker died before reading it all: its exit status tells why
        pass
    finally:
        close_end(end)


# -- the handle -----------------------------------------------------------------------------


def open_pidfd(pid: int) -> int | None:
    if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
        return None
    else:
        try:
            return os.pidfd_open(pid)
        except OSError:  # kernel before 5.3, or a sandbox that forbids it
            return None


@final
class SubprocessHandle:
    """One rank: its ``Popen``, and a descriptor that turns readable when it exits.

    A :class:`spawnkit.plugin.ProcessHandle`.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        executable: str,
        started: int,
        result: int,
        writer: threading.Thread | None,
    ) -> None:
        self._process = process
        self._pid = process.pid
        self._executable = executable
        # Until the worker script says it runs: see _check_started.
        self._started: int | None = started
        self._result: int | None = result
        self._writer = writer
        self._waiter: threading.Thread | None = None
        self._ended_w: int | None = None
        self._closed = False
        # Why the exit status is unknown, once it is (core reads it).
        self.status_lost: str | None = None
        self._pidfd: int | None = None
        plugin.mark_parent_only(started, result)
        if sys.platform == "win32":
            # A process handle is what multiprocessing.connection.wait waits on there.
            self._sentinel = int(process._handle)  # type: ignore[attr-defined]
        else:
            pidfd = open_pidfd(process.pid)
            if pidfd is not None:
                self._sentinel = self._pidfd = pidfd
                plugin.mark_parent_only(pidfd)
                return
            # No pidfd (macOS, old kernels): a thread blocks in waitpid and closes a pipe's write
            # end when the worker has exited. Not a pipe the worker holds: a grandchild could
            # keep that open after the worker ended.
            self._sentinel, self._ended_w = os.pipe()
            plugin.mark_parent_only(self._sentinel, self._ended_w)
            self._waiter = plugin.start_helper_thread(
                self._wait, name=f"spawnkit-subprocess-wait-{self._pid}"
            )

    def _wait(self) -> None:
        self._process.wait()
        assert self._ended_w is not None
        plugin.unmark_parent_only(self._ended_w)
        os.close(self._ended_w)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def sentinel(self) -> int:
        return self._sentinel

    def poll(self) -> int | None:
        if self._status_taken():
            self.status_lost = (
                "the worker ended, but its exit status was collected by other code in this "
                "process (os.wait() or os.waitpid(-1, ...)) before spawnkit could read it"
            )
            self._process.returncode = 255  # gone: nothing left for Popen to wait for
            return 255
        # Popen speaks the multiprocessing convention already: -N for death by signal N.
        status = self._process.poll()
        if self._started is not None:
            self._check_started(status)
        return status

    def _status_taken(self) -> bool:
        """Whether the worker ended but someone else reaped it (``Popen`` would say 0)."""
        if self.status_lost is not None:
            return True
        if self._process.returncode is not None or self._pidfd is None:
            return False
        if sys.platform != "linux":  # pidfds are Linux's
            return False
        else:
            import select

            if not select.select([self._pidfd], [], [], 0)[0]:
                return False  # still running
            try:
                os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            return False

    def _check_started(self, status: int | None) -> None:
        """Make sure the worker script ran; report an exit 0 without it as a failure.

        The script writes one byte to the ``started`` pipe before anything else. An
        ``executable`` that is no Python (``/bin/true``) exits 0 without it, and core would
        take the silence for a rank that returned ``None``. Core reads the result channel
        after this poll, so an error written into it here is what the job raises. Once the
        byte is in, both descriptors go: a long job holds no more than it needs.
        """
        assert self._started is not None
        assert self._result is not None
        if status is None and sys.platform == "win32":
            return  # no non-blocking pipes there before 3.12: look only after the exit
        try:
            ran = os.read(self._started, 1) != b""
        except BlockingIOError:  # not yet, or something the executable started holds it
            ran = False
        if status is None and not ran:
            return
        if status == 0 and not ran:
            from ._boot.fresh_worker import send_error

            error = RuntimeError(
                f"executable {self._executable!r} exited with status 0 without running "
                "spawnkit's worker script: it is not a Python interpreter, or a wrapper that "
                "does not run the command it is given; pass executable= the path of a Python "
                "interpreter"
            )
            send_error(self._result, error, f"RuntimeError: {error}\n")
        self._close_checks()

    def _close_checks(self) -> None:
        for fd in (self._started, self._result):
            if fd is not None:
                plugin.unmark_parent_only(fd)
                os.close(fd)
        self._started = self._result = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_checks()
        # Both threads are done or about to be: the worker has exited, so waitpid has
        # returned and a pending write has failed with EPIPE.
        for thread in (self._waiter, self._writer):
            if thread is not None:
                thread.join(timeout=1.0)
        if sys.platform != "win32":
            plugin.unmark_parent_only(self._sentinel)
            os.close(self._sentinel)


# -- the backend ----------------------------------------------------------------------------


class FreshInterpreterBackend(plugin.LocalBackend):
    """Starts each rank as ``*prefix executable *interpreter_args fresh_worker.py``.

    The built-in ``subprocess`` backend. To start interpreters differently, subclass it,
    override :meth:`command_prefix` or :meth:`popen_options`, set :attr:`name`, and
    register the subclass with ``options=FreshInterpreterBackend.OPTIONS`` plus your own
    and ``unavailable=FreshInterpreterBackend.unavailable()``.

    Args:
        executable: the interpreter (default ``sys.executable``); a bare name is looked up
            on the parent's ``PATH``. Another Python 3.10+ works, a virtual environment's
            too, as long as it can import what ``fn`` and ``args`` need.
        cwd: the workers' working directory (default: the parent's).
        interpreter_args: interpreter options placed before the worker script, such as
            ``["-X", "faulthandler"]`` or ``["-I"]``.

    Raises:
        InvalidArgumentError: an option of the wrong type.
        ConfigError: an option with a wrong value (a missing ``cwd``, ``-m`` in
            ``interpreter_args``).
        LaunchError: the executable is not there or cannot be run.

    Example::

        spawnkit.spawn(train, nprocs=2, backend="subprocess",
                       executable="/opt/venv/bin/python", interpreter_args=["-X", "dev"])
    """

    #: The backend's name, as its messages and errors say it.
    name = NAME
    #: The options :meth:`__init__` takes, for ``registry.add(..., options=...)``.
    OPTIONS = OPTIONS

    def __init__(
        self,
        executable: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        interpreter_args: Sequence[str] | None = None,
    ) -> None:
        try:
            self._interpreter_args = _check_interpreter_args(interpreter_args)
            self._cwd = _check_cwd(cwd)
            self._executable = _check_executable(executable)
        except (spawnkit.ConfigError, spawnkit.LaunchError) as exc:
            raise type(exc)(f"backend {self.name!r}: {exc}") from None
        header = _header()
        self._header = frame(header) + header

    @staticmethod
    def unavailable() -> str | None:
        """Why fresh interpreters cannot be started here, or ``None`` if they can.

        For ``registry.add(..., unavailable=...)``, so that a subclass is listed with the reason.
        """
        return unavailable_reason()

    def command_prefix(self, rank: int) -> Sequence[str]:
        """What goes in front of the interpreter on rank ``rank``'s command line.

        Empty by default. A program that ends by running its arguments in its own process
        (``taskset -c 3``, ``numactl --cpunodebind=0``, ``nice -n 5``) keeps the worker's
        pid and passes on its descriptors, as every command here must: the worker needs
        the descriptors the spec names. Called in the parent, once per rank.
        """
        return ()

    def popen_options(self, rank: int) -> dict[str, Any]:
        """Extra keyword arguments for rank ``rank``'s ``subprocess.Popen``.

        Empty by default; for example ``{"user": "builder"}`` or ``{"umask": 0o077}``.
        Options spawnkit sets itself (``args``, ``executable``, ``pass_fds``, ``close_fds``,
        ``env``, ``cwd``, ``stdin``, ``startupinfo``) cannot be replaced here.
        """
        return {}

    def start_process(self, spec: plugin.WorkerSpec) -> SubprocessHandle:
        import pickle

        # The rank's variables (spawn's env=, RANK...) are there from the interpreter's
        # start, so the ones Python reads at start-up (PYTHONPATH, PYTHONHASHSEED) work.
        env = {**os.environ, **spec.env} if spec.env else None
        opened: list[int | socket.socket] = []
        copies: list[int] = []
        try:
            spec_fd, spec_end = spec_channel()
            plugin.mark_parent_only(spec_end if isinstance(spec_end, int) else spec_end.fileno())
            opened.append(spec_end)
            spec_fd = above_stdio(spec_fd)
            opened.append(spec_fd)
            started_r, started_w = os.pipe()
            opened.append(started_r)
            started_w = above_stdio(started_w)
            opened.append(started_w)
            assert spec.result_fd is not None  # LocalBackend.start gave it one
            result = os.dup(spec.result_fd)
            opened.append(result)
            if sys.platform != "win32":
                # One the job's arguments carry may be numbered 0-2 (the program started
                # with a standard stream closed): the worker's stdin would replace it.
                low = {fd: above_stdio(os.dup(fd)) for fd in spec.fds if fd <= 2}
                copies = list(low.values())
                opened += copies
                spec = spec.with_fds([low.get(fd, fd) for fd in spec.fds])
            # The worker's descriptors, in the order of its command line's numbers.
            passed = (spec_fd, started_w, *spec.fds)
            # Windows hands over handles, not descriptors: the spec names those instead.
            numbers = _handles(passed) if sys.platform == "win32" else list(passed)
            sent = spec if sys.platform != "win32" else spec.with_fds(numbers[2:])
            body = pickle.dumps(sent, _SPEC_PROTOCOL)
            process = self._popen(spec.rank, passed, numbers, env)
        except BaseException:
            for end in opened:
                close_end(end)
            raise
        for fd in (spec_fd, started_w, *copies):  # the worker's now
            os.close(fd)
        if sys.platform != "win32":  # there, the read after exit cannot block anyway
            os.set_blocking(started_r, False)
        writer = send(spec_end, [self._header, frame(body), body])
        try:
            return SubprocessHandle(process, self._executable, started_r, result, writer)
        except BaseException:  # out of descriptors or threads: this rank must not linger
            process.kill()
            process.wait()
            raise

    def _popen(
        self,
        rank: int,
        fds: tuple[int, ...],
        numbers: list[int],
        env: dict[str, str] | None,
    ) -> subprocess.Popen[bytes]:
        import subprocess

        spec_n, started_n, result_n = numbers[0], numbers[1], numbers[2]
        prefix = [str(part) for part in self.command_prefix(rank)]
        argv = [*prefix, self._executable, *self._interpreter_args, WORKER, str(rank)]
        argv += [str(spec_n), str(result_n), str(started_n)]
        extra = dict(self.popen_options(rank))
        taken = sorted(set(extra) & _OWN_POPEN_OPTIONS)
        if taken:
            raise spawnkit.ConfigError(
                f"backend {self.name!r}: popen_options() may not set {', '.join(taken)}: "
                "spawnkit sets those itself"
            )
        try:
            if sys.platform == "win32":
                return _popen_windows(argv, numbers, env, self._cwd, extra)
            else:
                # pass_fds keeps every number, so the spec's descriptors are valid as they are.
                # stdin is /dev/null, as under multiprocessing: a worker leads its own process
                # group, so reading the terminal would stop it (SIGTTIN) instead of failing.
                return subprocess.Popen(
                    argv,
                    pass_fds=fds,
                    close_fds=True,
                    env=env,
                    cwd=self._cwd,
                    stdin=subprocess.DEVNULL,
                    **extra,
                )
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                raise  # this process's trouble, not the command's: core names it
            where = f" in {self._cwd!r}" if self._cwd and exc.filename == self._cwd else ""
            if prefix:
                what = f"command {prefix[0]!r} (from command_prefix())"
                fix = f"install {prefix[0]!r} or put it on PATH"
            else:
                what = f"executable {self._executable!r}"
                fix = (
                    "pass executable= the path of a Python interpreter "
                    f"(default: {sys.executable!r})"
                )
            raise spawnkit.LaunchError(
                f"backend {self.name!r} cannot start rank {rank} with {what}{where}: "
                f"{exc.strerror or exc}; {fix}"
            ) from exc


# Errors of starting any process here (descriptors, memory, the process limit), which no
# other executable or command prefix would fix.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})

_OWN_POPEN_OPTIONS = frozenset(
    {"args", "pass_fds", "close_fds", "env", "cwd", "stdin", "startupinfo", "executable"}
)


def _handles(fds: Sequence[int]) -> list[int]:
    if sys.platform == "win32":
        import msvcrt

        return [msvcrt.get_osfhandle(fd) for fd in fds]
    else:
        raise OSError(f"handles are passed only on Windows, not on {sys.platform}")


def _popen_windows(
    argv: list[str],
    handles: list[int],
    env: dict[str, str] | None,
    cwd: str | None,
    extra: dict[str, Any],
) -> subprocess.Popen[bytes]:
    """Windows passes no descriptors: hand over inheritable handles, named by value.

    Only the handles in ``handle_list`` are inherited, and only while they are marked
    inheritable, which ends when ``Popen`` returns. The worker wraps each value in a new
    descriptor and renumbers the spec with ``with_fds``.
    """
    if sys.platform == "win32":
        import subprocess

        info = subprocess.STARTUPINFO()
        info.lpAttributeList = {"handle_list": handles}
        for handle in handles:
            os.set_handle_inheritable(handle, True)
        try:
            return subprocess.Popen(
                argv,
                close_fds=True,
                startupinfo=info,
                env=env,
                cwd=cwd,
                **extra,
            )
        finally:
            for handle in handles:
                os.set_handle_inheritable(handle, False)
    else:
        raise OSError(f"handles are passed only on Windows, not on {sys.platform}")
