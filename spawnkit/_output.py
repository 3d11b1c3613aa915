"""Where each rank's stdout and stderr go: log files, the console with a rank prefix, or both.

A rank's stream is left alone (the worker writes to the parent's descriptor, as under
``multiprocessing``), pointed at its log file (``log_dir/<rank>/stdout.log``), or pointed at a
pipe that the parent's relay thread reads: the relay copies the bytes to the log file, if
any, and writes whole lines to the console with the rank's prefix, so that lines of several
ranks never mix mid-line. The worker points its descriptors 1 and 2 (see
``spawnkit._child``), so output of C extensions and subprocesses goes the same way.
"""

from __future__ import annotations

import os
import selectors
import sys
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, final

from . import _fds
from ._errors import ConfigError, InvalidArgumentError
from ._signals.threads import start_helper_thread
from ._spec import PARENT_ONLY_FDS

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["DEFAULT_PREFIX", "Console", "OutputPlan", "console"]

DEFAULT_PREFIX = "[rank {rank}]: "
_NAMES = {1: "stdout", 2: "stderr"}
_CHOICES = {"none": (), "out": (1,), "err": (2,), "all": (1, 2)}
# A line longer than this goes to the console in pieces rather than waiting for its end.
_LONGEST_LINE = 1 << 16
# How long the relay may still wait, once every rank has ended, for output that something
# the ranks left behind keeps the pipes open for (a daemon in a process group of its own).
DRAIN_WAIT = 2.0


@final
class Console:
    """The parent's terminal, shared by every job's relay and the command's status line.

    One lock for all writers, so a line is written whole; the status line, when shown, is
    cleared before a line is written and drawn again after it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = ""

    def write(self, target: int, data: bytes) -> None:
        """Write ``data`` (whole lines) to the parent's stdout (1) or stderr (2)."""
        with self._lock:
            if self._status:
                self._put(2, b"\r\x1b[K")
            self._put(target, data)
            if self._status:
                self._put(2, self._status.encode(errors="replace"))

    def status(self, text: str) -> None:
        """Show ``text`` as the status line on stderr (a terminal); ``""`` clears it."""
        with self._lock:
            if text != self._status:
                self._put(2, b"\r\x1b[K" + text.encode(errors="replace"))
                self._status = text

    @staticmethod
    def _put(target: int, data: bytes) -> None:
        stream: IO[str] | None = sys.stdout if target == 1 else sys.stderr
        if stream is None:
            return
        try:
            stream.flush()
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
                buffer.flush()
            else:
                stream.write(data.decode(errors="replace"))
                stream.flush()
        except (OSError, ValueError):  # the console is gone or closed: the logs still have it
            pass


console = Console()


def _streams(name: str, value: object) -> tuple[int, ...]:
    if value is True:
        return (1, 2)
    if value is False or value is None:
        return ()
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"{name} must be one of 'out', 'err', 'all', 'none' or a bool, not {value!r}"
        )
    if value not in _CHOICES:
        raise ConfigError(
            f"{name} must be one of 'out', 'err', 'all', 'none' or a bool, not {value!r}"
        )
    return _CHOICES[value]


@final
class _Source:
    """One rank's stream as the relay reads it."""

    __slots__ = ("file", "partial", "prefix", "rank", "target")

    def __init__(self, rank: int, target: int, file: int | None, prefix: bytes | None) -> None:
        self.rank = rank
        self.target = target
        self.file = file  # the log file, or None
        self.prefix = prefix  # None: not shown on the console
        self.partial = bytearray()

    def feed(self, data: bytes) -> None:
        if self.file is not None:
            _write_all(self.file, data)
        if self.prefix is None:
            return
        self.partial += data
        cut = max(self.partial.rfind(b"\n"), self.partial.rfind(b"\r"))
        if cut < 0 and len(self.partial) < _LONGEST_LINE:
            return
        whole = bytes(self.partial) if cut < 0 else bytes(self.partial[: cut + 1])
        del self.partial[: len(whole)]
        # A line too long to wait for is shown in pieces, each a console line of its own:
        # another rank's line must never continue it.
        console.write(self.target, self._prefixed(whole if cut >= 0 else whole + b"\n"))

    def end(self) -> None:
        if self.prefix is not None and self.partial:
            console.write(self.target, self._prefixed(bytes(self.partial) + b"\n"))
            self.partial.clear()
        if self.file is not None:
            os.close(self.file)
            self.file = None

    def _prefixed(self, text: bytes) -> bytes:
        assert self.prefix is not None
        if not self.prefix:
            return text
        lines = text.splitlines(keepends=True)
        return b"".join(self.prefix + line for line in lines)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:  # a full disk: the console still gets the output
        pass


@final
class OutputPlan:
    """Where a job's ranks write: built from ``spawn``'s output options, checked up front.

    :meth:`open` gives one rank its descriptors just before it starts; :meth:`start` runs
    the relay once every rank started; :meth:`finish` waits for it once they all ended.
    """

    def __init__(
        self,
        nprocs: int,
        log_dir: str | os.PathLike[str] | None = None,
        redirect: str | bool | None = None,
        tee: str | bool | None = None,
        prefix: str | None = None,
        ranks: Iterable[int] | None = None,
    ) -> None:
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise InvalidArgumentError(
                f"log_dir must be a directory path (str or os.PathLike), not {log_dir!r}"
            )
        self.log_dir = None if log_dir is None else os.path.abspath(os.fspath(log_dir))
        default = "all" if log_dir is not None else None
        self.redirect = _streams("redirect", default if redirect is None else redirect)
        self.tee = _streams("tee", tee)
        if self.log_dir is None and (self.redirect or self.tee):
            which = "redirect" if self.redirect else "tee"
            raise ConfigError(
                f"{which} sends the ranks' output to log files, so it needs log_dir: pass "
                "log_dir=PATH (each rank writes PATH/<rank>/stdout.log and stderr.log)"
            )
        stray = sorted(set(self.tee) - set(self.redirect))
        if stray:
            raise ConfigError(
                f"tee echoes redirected output to the console, but {_NAMES[stray[0]]} is not "
                f"redirected (redirect={redirect!r}); redirect it too, or leave it out of tee"
            )
        if prefix is not None:
            if not isinstance(prefix, str):
                raise InvalidArgumentError(f"prefix must be a str such as {DEFAULT_PREFIX!r}")
            try:
                prefix.format(rank=0)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"prefix {prefix!r} is not a valid format: {exc!r}; the only field is "
                    f"{{rank}}, as in {DEFAULT_PREFIX!r} (double a brace to print it)"
                ) from None
        self.prefix = prefix
        self.ranks = None if ranks is None else _check_ranks(ranks, nprocs)
        self.nprocs = nprocs
        self._sources: dict[int, _Source] = {}
        self._thread: threading.Thread | None = None
        self._stop_r = self._stop_w = -1
        if self.log_dir is not None:
            try:
                for rank in range(nprocs):
                    os.makedirs(os.path.join(self.log_dir, str(rank)), exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"log_dir {self.log_dir!r}: cannot create the ranks' folders: "
                    f"{exc.strerror or exc}"
                ) from None

    @property
    def active(self) -> bool:
        """Whether any rank's output goes anywhere but the parent's own descriptors."""
        return bool(self.redirect) or self.prefix is not None or self.ranks is not None

    def logs(self, rank: int) -> dict[str, str]:
        """``{"stdout": path, "stderr": path}`` of the streams redirected to files."""
        if self.log_dir is None:
            return {}
        return {
            _NAMES[s]: os.path.join(self.log_dir, str(rank), f"{_NAMES[s]}.log")
            for s in self.redirect
        }

    def open(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(streams, fds)`` for rank ``rank``'s spec; the caller closes ``fds`` after start."""
        streams: list[int] = []
        fds: list[int] = []
        try:
            for target in (1, 2):
                fd = self._open_stream(rank, target)
                if fd is not None:
                    streams.append(target)
                    fds.append(fd)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return tuple(streams), tuple(fds)

    def _open_stream(self, rank: int, target: int) -> int | None:
        shown = self.ranks is None or rank in self.ranks
        redirected = target in self.redirect
        echoed = (target in self.tee) if redirected else self.prefix is not None
        file = None
        if redirected:
            path = self.logs(rank)[_NAMES[target]]
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
            file = _fds.above_stdio(os.open(path, flags, 0o644))
            if not (echoed and shown):
                return file  # the worker writes its log itself
        elif not shown:
            return _fds.above_stdio(os.open(os.devnull, os.O_WRONLY))
        elif not echoed:
            return None  # the parent's own descriptor, as it is
        read_end, write_end = _fds.pipe()
        PARENT_ONLY_FDS.add(read_end)
        if file is not None:
            PARENT_ONLY_FDS.add(file)
        os.set_blocking(read_end, False)
        prefix = DEFAULT_PREFIX if self.prefix is None else self.prefix
        self._sources[read_end] = _Source(rank, target, file, prefix.format(rank=rank).encode())
        return write_end

    def start(self) -> None:
        """Start relaying the pipes :meth:`open` made (after every rank started)."""
        if not self._sources or self._thread is not None:
            return
        self._stop_r, self._stop_w = _fds.pipe()
        PARENT_ONLY_FDS.update((self._stop_r, self._stop_w))
        self._thread = start_helper_thread(self._relay, name="spawnkit-output")

    def finish(self, drain: float = DRAIN_WAIT) -> None:
        """Wait until the relay has passed on everything the ranks wrote; release it.

        Called once every rank ended. Bounded: output that a process the ranks left
        behind still writes after ``drain`` seconds is not relayed.
        """
        if self._thread is None:
            self._close_sources()
            return
        self._thread.join(drain)
        if self._thread.is_alive():
            os.write(self._stop_w, b"!")
            self._thread.join()
        for fd in (self._stop_r, self._stop_w):
            PARENT_ONLY_FDS.discard(fd)
            os.close(fd)
        self._thread = None

    def _relay(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            for fd in self._sources:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while len(selector.get_map()) > 1:
                for key, _ in selector.select():
                    fd = int(key.fd)
                    if fd == self._stop_r:
                        return
                    data = _read(fd)
                    if data is None:
                        continue
                    if data:
                        self._sources[fd].feed(data)
                    else:
                        selector.unregister(fd)
                        self._end(fd)
        finally:
            selector.close()
            self._close_sources()

    def _end(self, fd: int) -> None:
        source = self._sources.pop(fd)
        PARENT_ONLY_FDS.discard(fd)
        if source.file is not None:
            PARENT_ONLY_FDS.discard(source.file)
        os.close(fd)
        source.end()

    def _close_sources(self) -> None:
        for fd in list(self._sources):
            self._end(fd)


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _check_ranks(ranks: Iterable[int], nprocs: int) -> Collection[int]:
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise InvalidArgumentError(
            f"ranks must be a collection of ranks such as [0], not {ranks!r}"
        )
    chosen = set()
    for rank in ranks:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise InvalidArgumentError(f"ranks must hold ints, not {rank!r}")
        if not 0 <= rank < nprocs:
            raise ConfigError(f"ranks names rank {rank}, but the job has ranks 0 to {nprocs - 1}")
        chosen.add(rank)
    return frozenset(chosen)
