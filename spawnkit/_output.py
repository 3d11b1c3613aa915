"""Where each rank's stdout and stderr go: log files, the console with a rank prefix, or both.

A rank's stream is left alone (the worker writes to the parent's descriptor, as under
``multiprocessing``), pointed at its log file (``log_dir/<rank>/stdout.log``), or pointed at a
pipe that the parent's relay thread reads: the relay copies the bytes to the log file, if
any, and writes whole lines to the console with the rank's prefix, so that lines of several
ranks never mix mid-line. The worker points its descriptors 1 and 2 (see
``spawnkit._child``), so output of C extensions and subprocesses goes the same way.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import sys
import threading
from collections import deque
from collections.abc import Iterable, Mapping
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
# the ranks left behind keeps the pipes open for (a daemon in a process group of its own),
# and for a stalled console (a pipe nobody reads) to take the lines it still holds.
DRAIN_WAIT = 2.0
# A console that takes nothing (a pipe nobody reads) must not stall the ranks, whose writes
# to the relay's pipes would block, nor the log files the relay writes: the relay keeps at
# most this much of a job's console output waiting, and drops, counted, what comes beyond.
_BACKLOG = 1 << 20
# A pipe that polls writable has room for this much at least, so a write of it never blocks.
_CHUNK = getattr(select, "PIPE_BUF", 512)


@final
class Console:
    """The parent's terminal, shared by every job's relay and the command's status line.

    One lock for all writers, so a line is written whole; the status line, when shown, is
    cleared before a line is written and drawn again after it. A relay :meth:`offer` s its
    lines without waiting: what a stalled console did not take yet stays here, and goes out
    before anything else is written to that stream, so no other line starts inside it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = ""
        # Per stream: the rest of lines the console took only in part, and whose they are.
        self._rest: dict[int, tuple[bytes, object]] = {}

    def write(self, target: int, data: bytes) -> None:
        """Write ``data`` (whole lines) to the parent's stdout (1) or stderr (2)."""
        with self._lock:
            self._put_rest(target, wait=True)
            self._put_framed(target, data, owner=None, wait=True)

    def offer(self, target: int, data: bytes, owner: object) -> bool:
        """Write ``data`` (whole lines of ``owner``) as far as the console takes it now.

        ``False``: the console still holds earlier lines and took none of ``data``. What it
        took in part is finished by the next write to ``target``, or :meth:`abandon` ed.
        """
        with self._lock:
            if not self._put_rest(target, wait=False):
                return False
            self._put_framed(target, data, owner, wait=False)
            return True

    def push(self) -> None:
        """Write what the console took in part, as far as it takes more now."""
        with self._lock:
            for target in list(self._rest):
                self._put_rest(target, wait=False)

    def waiting(self, owner: object) -> list[int]:
        """The descriptors whose stream holds a rest of ``owner``'s lines."""
        with self._lock:
            return [
                fd
                for target, (_, whose) in self._rest.items()
                if whose is owner and (fd := _console_fd(target)) is not None
            ]

    def fds(self) -> dict[int, int]:
        """``{target: descriptor}`` of the streams that are descriptors."""
        return {t: fd for t in (1, 2) if (fd := _console_fd(t)) is not None}

    def abandon(self, owner: object) -> bytes:
        """Give up the rests of ``owner``'s lines, and return them."""
        with self._lock:
            dropped = b""
            for target, (rest, whose) in list(self._rest.items()):
                if whose is owner:
                    dropped += rest
                    # The line cut short ends where it stopped: the next starts a line of its own.
                    self._rest[target] = (b"\n", None)
            return dropped

    def status(self, text: str) -> None:
        """Show ``text`` as the status line on stderr (a terminal); ``""`` clears it."""
        with self._lock:
            if text != self._status:
                self._put(2, b"\r\x1b[K" + text.encode(errors="replace"), wait=True)
                self._status = text

    def _put_rest(self, target: int, *, wait: bool) -> bool:
        rest, owner = self._rest.pop(target, (b"", None))
        left = self._put(target, rest, wait=wait) if rest else b""
        if left:
            self._rest[target] = (left, owner)
        return not left

    def _put_framed(self, target: int, data: bytes, owner: object, *, wait: bool) -> None:
        if self._status:
            self._put(2, b"\r\x1b[K", wait=True)
        left = self._put(target, data, wait=wait)
        if left:
            self._rest[target] = (left, owner)
        elif self._status:
            self._put(2, self._status.encode(errors="replace"), wait=True)

    @staticmethod
    def _put(target: int, data: bytes, *, wait: bool) -> bytes:
        """Write ``data``; what is left when the console takes no more without waiting."""
        stream: IO[str] | None = sys.stdout if target == 1 else sys.stderr
        if stream is None:
            return b""
        fd = _console_fd(target)
        try:
            if fd is None:  # no descriptor (a notebook's stream): it never stalls
                stream.flush()
                buffer = getattr(stream, "buffer", None)
                if buffer is not None:
                    buffer.write(data)
                    buffer.flush()
                else:
                    stream.write(data.decode(errors="replace"))
                    stream.flush()
                return b""
            view = memoryview(data)
            flushed = False
            while view:
                if not wait and not _writable(fd):
                    return bytes(view)
                if not flushed:  # what the program printed itself comes first
                    stream.flush()
                    flushed = True
                view = view[os.write(fd, view[:_CHUNK]) :]
        except BlockingIOError:  # someone made the console non-blocking: it is full
            return bytes(view)
        except (OSError, ValueError):  # the console is gone or closed: the logs still have it
            pass
        return b""


def _console_fd(target: int) -> int | None:
    """The descriptor under the parent's stdout (1) or stderr (2), if it has one."""
    stream = sys.stdout if target == 1 else sys.stderr
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return None
    try:
        fd = buffer.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return fd if isinstance(fd, int) else None


def _writable(fd: int) -> bool:
    try:
        return bool(select.select([], [fd], [], 0)[1])
    except (OSError, ValueError):  # beyond select's range: write as before, waiting
        return True


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
            f"{name} must be one of 'out', 'err', 'all', 'none' or a bool, not {value!r}",
            parameter=name,
        )
    return _CHOICES[value]


@final
class _Lines:
    """Cuts a stream into whole lines, whatever the boundaries of its reads.

    ``\n``, ``\r\n`` and a lone ``\r`` (a progress bar redrawing its line) end a line. A
    ``\r`` that ends a read waits for the next byte: with a ``\n`` it is one ``\r\n``.
    """

    __slots__ = ("_cut", "_longest", "_partial")

    def __init__(self, longest: int = _LONGEST_LINE) -> None:
        self._partial = bytearray()
        self._longest = longest
        # A line too long to wait for went out in pieces, the last one ended by us: its own
        # end, still to come, ends nothing more.
        self._cut = False

    def feed(self, data: bytes) -> bytes:
        """The whole lines that ``data`` completes (a line too long to wait for: a piece)."""
        buf = self._partial
        buf += data
        end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        cut = max(buf.rfind(b"\n", 0, end), buf.rfind(b"\r", 0, end))
        if cut < 0:
            if end < self._longest:
                return b""
            piece = bytes(buf[:end])
            del buf[:end]
            self._cut = True
            return piece + b"\n"
        whole = bytes(buf[: cut + 1])
        del buf[: cut + 1]
        return self._after_cut(whole)

    def end(self) -> bytes:
        """The last line, at the end of the stream, ended if it was not."""
        rest = self._after_cut(bytes(self._partial))
        self._partial.clear()
        return rest + b"\n" if rest and not rest.endswith((b"\n", b"\r")) else rest

    def _after_cut(self, whole: bytes) -> bytes:
        if self._cut:
            self._cut = False
            for ending in (b"\r\n", b"\n", b"\r"):
                if whole.startswith(ending):
                    return whole[len(ending) :]
        return whole


def prefixed(prefix: bytes, text: bytes) -> bytes:
    """Whole lines ``text`` as the console shows them: each line after ``prefix``."""
    if not prefix:
        return text
    return b"".join(prefix + line for line in text.splitlines(keepends=True))


@final
class _Source:
    """One rank's stream as the relay reads it."""

    __slots__ = ("file", "lines", "prefix", "rank", "target")

    def __init__(self, rank: int, target: int, file: int | None, prefix: bytes | None) -> None:
        self.rank = rank
        self.target = target
        self.file = file  # the log file, or None
        self.prefix = prefix  # None: not shown on the console
        self.lines = _Lines()

    def feed(self, data: bytes) -> bytes:
        """Take ``data`` read from the rank; the whole lines to show, prefixed."""
        if self.file is not None:
            _write_all(self.file, data)
        if self.prefix is None:
            return b""
        return prefixed(self.prefix, self.lines.feed(data))

    def end(self) -> bytes:
        """The stream ended: close the log; the last line to show, prefixed."""
        if self.file is not None:
            os.close(self.file)
            self.file = None
        if self.prefix is None:
            return b""
        return prefixed(self.prefix, self.lines.end())


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
                "log_dir=PATH (each rank writes PATH/<rank>/stdout.log and stderr.log)",
                parameter=which,
            )
        stray = sorted(set(self.tee) - set(self.redirect))
        if stray:
            raise ConfigError(
                f"tee echoes redirected output to the console, but {_NAMES[stray[0]]} is not "
                f"redirected (redirect={redirect!r}); redirect it too, or leave it out of tee",
                parameter="tee",
            )
        if prefix is not None:
            if not isinstance(prefix, str):
                raise InvalidArgumentError(f"prefix must be a str such as {DEFAULT_PREFIX!r}")
            try:
                shown = prefix.format(rank=0)
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                raise ConfigError(
                    f"prefix {prefix!r} is not a valid format: {exc!r}; the only field is "
                    f"{{rank}}, as in {DEFAULT_PREFIX!r} (double a brace to print it)",
                    parameter="prefix",
                ) from None
            try:
                _encode_prefix(shown)
            except UnicodeEncodeError as exc:
                raise ConfigError(
                    f"prefix {prefix!r} cannot be written to the console: "
                    f"{shown[exc.start : exc.end]!r} is a lone surrogate that stands for no "
                    "byte (only '\\udc80'-'\\udcff' do: bytes that were not UTF-8 on the "
                    "command line); use text or such escaped bytes",
                    parameter="prefix",
                ) from None
        self.prefix = prefix
        self.ranks = None if ranks is None else _check_ranks(ranks, nprocs)
        self.nprocs = nprocs
        self._sources: dict[int, _Source] = {}
        self._thread: threading.Thread | None = None
        self._stop_r = self._stop_w = -1
        # Lines waiting for a stalled console (the relay thread's alone), and their size.
        self._backlog: deque[tuple[int, bytes]] = deque()
        self._backlog_size = 0
        self.unshown_lines = 0  # of the ranks' output, dropped because the console stalled
        self.unshown_bytes = 0
        # rank -> the parent's own reference to that rank's stderr log, for the traceback
        # the rank raised with (see finish). The same open file as the worker's and the
        # relay's: one file offset, so what it adds goes after everything they wrote.
        self._error_logs: dict[int, int] = {}
        if self.log_dir is not None:
            try:
                for rank in range(nprocs):
                    os.makedirs(os.path.join(self.log_dir, str(rank)), exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"log_dir {self.log_dir!r}: cannot create the ranks' folders: "
                    f"{exc.strerror or exc}",
                    parameter="log_dir",
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
            if target == 2:
                self._error_logs[rank] = _fds.above_stdio(os.dup(file))
                PARENT_ONLY_FDS.add(self._error_logs[rank])
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
        self._sources[read_end] = _Source(
            rank, target, file, _encode_prefix(prefix.format(rank=rank))
        )
        return write_end

    def start(self) -> None:
        """Start relaying the pipes :meth:`open` made (after every rank started)."""
        if not self._sources or self._thread is not None:
            return
        self._stop_r, self._stop_w = _fds.pipe()
        PARENT_ONLY_FDS.update((self._stop_r, self._stop_w))
        self._thread = start_helper_thread(self._relay, name="spawnkit-output")

    def finish(
        self, drain: float = DRAIN_WAIT, tracebacks: Mapping[int, str] | None = None
    ) -> None:
        """Wait until the relay has passed on everything the ranks wrote; release it.

        Called once every rank ended. Bounded: output that a process the ranks left
        behind still writes after ``drain`` seconds is not relayed, and lines a stalled
        console has not taken by then are dropped; the log, and the report, say how many.

        ``tracebacks`` (rank -> text) are the tracebacks of what ranks raised: each goes at
        the end of its rank's stderr log, as an uncaught exception's would. The rank sent it
        to this process rather than print it, so the console shows it once, when the job's
        failure is raised here.
        """
        try:
            self._finish_relay(drain)
        finally:
            self._close_error_logs(tracebacks or {})

    def _close_error_logs(self, tracebacks: Mapping[int, str]) -> None:
        for rank, fd in self._error_logs.items():
            text = tracebacks.get(rank)
            if text:
                ended = text if text.endswith("\n") else text + "\n"
                _write_all(fd, ended.encode(errors="replace"))
            PARENT_ONLY_FDS.discard(fd)
            os.close(fd)
        self._error_logs.clear()

    def _finish_relay(self, drain: float) -> None:
        if self._thread is None:
            self._close_sources()
            return
        self._thread.join(drain)
        if self._thread.is_alive():
            os.write(self._stop_w, b"!")
            # Bounded: the relay waits on nothing but its selector, which the byte wakes.
            self._thread.join()
        for fd in (self._stop_r, self._stop_w):
            PARENT_ONLY_FDS.discard(fd)
            os.close(fd)
        self._thread = None
        self._drop(b"".join(data for _, data in self._backlog) + console.abandon(self))
        self._backlog.clear()
        if self.unshown_lines:
            logs = f"; the log files under {self.log_dir!r} have them" if self.log_dir else ""
            logging.getLogger("spawnkit").warning(
                "%d lines (%d bytes) of the ranks' output were not shown: the console (a "
                "pipe nobody reads?) did not take them within %g s%s",
                self.unshown_lines,
                self.unshown_bytes,
                drain,
                logs,
            )

    def _emit(self, target: int, data: bytes) -> None:
        """Show whole lines ``data`` on the console, or keep them until it takes them."""
        if data and not (self._pump() and console.offer(target, data, self)):
            if self._backlog_size + len(data) > _BACKLOG:
                self._drop(data)
            else:
                self._backlog.append((target, data))
                self._backlog_size += len(data)

    def _pump(self) -> bool:
        """Pass what waits for the console on, as far as it takes it; whether all went."""
        while self._backlog:
            target, data = self._backlog[0]
            if not console.offer(target, data, self):
                return False
            self._backlog.popleft()
            self._backlog_size -= len(data)
        return True

    def _drop(self, data: bytes) -> None:
        self.unshown_lines += len(data.splitlines())
        self.unshown_bytes += len(data)

    def _console_waits(self) -> set[int]:
        """The console's descriptors that lines of this job wait for."""
        fds = set(console.waiting(self))
        if self._backlog:
            where = console.fds()
            fds.update(where[t] for t, _ in self._backlog if t in where)
        return fds

    def _relay(self) -> None:
        selector = selectors.DefaultSelector()
        writes: set[int] = set()
        try:
            for fd in self._sources:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                waits = self._console_waits()
                if len(selector.get_map()) - len(writes) <= 1 and not waits:
                    return
                for fd in writes - waits:
                    selector.unregister(fd)
                for fd in waits - writes:
                    try:
                        selector.register(fd, selectors.EVENT_WRITE)
                    except (OSError, ValueError):  # a file epoll refuses never stalls: finish drops
                        waits.discard(fd)
                writes = waits
                for key, _ in selector.select():
                    fd = int(key.fd)
                    if fd == self._stop_r:
                        return
                    if fd in writes:
                        console.push()
                        self._pump()
                        continue
                    data = _read(fd)
                    if data is None:
                        continue
                    source = self._sources[fd]
                    if data:
                        self._emit(source.target, source.feed(data))
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
        self._emit(source.target, source.end())

    def _close_sources(self) -> None:
        for fd in list(self._sources):
            self._end(fd)


def _encode_prefix(prefix: str) -> bytes:
    # As the command line's bytes came: one that was not UTF-8 is a surrogate escape.
    return prefix.encode("utf-8", "surrogateescape")


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
            raise ConfigError(
                f"the choice of ranks to show names rank {rank}, but the job has ranks 0 to "
                f"{nprocs - 1} (nprocs={nprocs}); name ranks in that range",
                parameter="ranks",
            )
        chosen.add(rank)
    return frozenset(chosen)
