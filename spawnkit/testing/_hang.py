"""Where a process hung, from a faulthandler traceback, named by the frame that matters.

A backend whose method blocks does not fail: it hangs, and a timeout that says only "did
not finish in time" leaves its author to guess which method it was. A faulthandler dump
knows, in a dozen frames of which most are spawnkit's or the standard library's:
:func:`describe_hang` picks the innermost one in code outside spawnkit's core (a backend,
the built-in backends included, a plugin, the test itself). :func:`hang_report` arms such a
dump around a block of the test process. No pytest here: the harness imports it too.
"""

from __future__ import annotations

import faulthandler
import os
import re
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

__all__ = ["Frame", "HangReport", "describe_hang", "hang_report", "main_thread_frames"]

# Both "Thread 0x... (most recent call first):" and the dumping thread's "Current thread";
# newer Pythons put the thread's name in brackets before the parenthesis.
_THREAD = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-fA-F]+\b.*\(most recent call first\):$")
_STACK = "Stack (most recent call first):"  # faulthandler.dump_traceback(all_threads=False)
_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+|\?\?\?) in (?P<function>.*)$')

_CORE = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _real_dirs(*keys: str) -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(os.path.realpath(paths[key]) for key in keys if key in paths)


# site-packages sits inside the standard library's folder on POSIX: checked first.
_SITE = _real_dirs("purelib", "platlib")
_STDLIB = _real_dirs("stdlib", "platstdlib")


@dataclass(frozen=True)
class Frame:
    """One line of a faulthandler traceback."""

    file: str
    line: int | None  # None where faulthandler printed ???
    function: str

    def __str__(self) -> str:
        call = self.function if self.function.startswith("<") else f"{self.function}()"
        return f"{self.file}:{'?' if self.line is None else self.line} in {call}"


def _within(path: str, folder: str) -> bool:
    return path.startswith(folder + os.sep)


def _in_core(file: str) -> bool:
    """In the ``spawnkit`` package itself (the built-in backends are a sibling, not in it)."""
    return _within(os.path.realpath(file), _CORE)


def _in_library(file: str) -> bool:
    """The standard library, frozen modules and ``-c`` strings: how it waits, not who."""
    if file.startswith("<") or file == "???":
        return True
    real = os.path.realpath(file)
    if any(_within(real, folder) for folder in _SITE):
        return False
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return any(_within(real, folder) for folder in _STDLIB)


def _dumps(text: str) -> list[list[list[Frame]]]:
    """Every dump in ``text``: its threads in the order printed, each innermost frame first.

    Threads of one dump are apart by a blank line only; any other line (``Timeout (...)!``,
    ``Fatal Python error``, a program's own output) ends that dump.
    """
    dumps: list[list[list[Frame]]] = []
    thread: list[Frame] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if _THREAD.match(line) or line == _STACK:
            if thread is None:
                dumps.append([])
            thread = []
            dumps[-1].append(thread)
        elif thread is None:
            continue
        elif match := _FRAME.match(line):
            number = match["line"]
            thread.append(
                Frame(match["file"], int(number) if number.isdigit() else None, match["function"])
            )
        elif line.strip() in ("", "<no Python frame>", "..."):
            continue  # between threads, a thread in C only, or frames cut off: still a dump
        else:
            thread = None
    return dumps


def main_thread_frames(text: str) -> list[Frame]:
    """The main thread's frames in the last faulthandler dump in ``text``, innermost first.

    faulthandler prints the newest thread first, so the main thread is the dump's last one
    (that has a Python frame). ``[]`` when ``text`` holds no dump.
    """
    dumps = _dumps(text)
    for frames in reversed(dumps[-1] if dumps else []):
        if frames:
            return frames
    return []


def describe_hang(text: str) -> str:
    """One line naming where the process whose faulthandler dump is ``text`` hung.

    ``text`` may hold other output too; the last dump in it is read, its main thread. The
    frame named is the innermost one in code outside spawnkit's core package (a backend,
    the built-in backends counting as one, a plugin, a test), skipping the standard
    library's frames, which say only how it waits; failing that, the innermost frame in
    spawnkit's core; failing that, the innermost frame. When that is not the innermost
    frame, the innermost follows, as where it waits, e.g.::

        /x/mine.py:42 in poll() (outside spawnkit's core), waiting in /y/threading.py:327 in wait()
    """
    frames = main_thread_frames(text)
    if not frames:
        return "an unknown place (no faulthandler traceback found)"
    own = [f for f in frames if not _in_library(f.file)]
    outside = [f for f in own if not _in_core(f.file)]
    if outside:
        chosen, whose = outside[0], "outside spawnkit's core"
    elif own:
        chosen, whose = own[0], "spawnkit's core"
    else:
        chosen, whose = frames[0], "the standard library"
    where = f"{chosen} ({whose})"
    if chosen is not frames[0]:
        where += f", waiting in {frames[0]}"
    return where


class HangReport:
    """What :func:`hang_report` saw: ``hung`` while the block runs, the rest after it."""

    def __init__(self, seconds: float, dump: IO[bytes]) -> None:
        self.seconds = seconds
        self.text = ""  # the faulthandler dump, once the block ended, if it outlived seconds
        self._dump: IO[bytes] | None = dump

    @property
    def hung(self) -> bool:
        """Whether the block outlived ``seconds``: the dump is (being) written."""
        if self._dump is not None:  # still running: ask the file
            return os.fstat(self._dump.fileno()).st_size > 0
        return bool(self.text)

    @property
    def description(self) -> str | None:
        """:func:`describe_hang` of the dump once the block ended; ``None`` if none."""
        return describe_hang(self.text) if self.text else None

    def _finish(self) -> None:
        assert self._dump is not None
        faulthandler.cancel_dump_traceback_later()  # before reading: no dump half-written
        self._dump.seek(0)
        self.text = self._dump.read().decode(errors="replace")
        self._dump = None


@contextmanager
def hang_report(seconds: float) -> Iterator[HangReport]:
    """Dump every thread's stack to a temporary file if the block is still running after
    ``seconds``, and say where it hung.

    The dump is written by faulthandler's own thread, so it comes even while the block is
    stuck in C code. While the block runs, the report's ``hung`` says whether the dump came
    yet; when the block ends the timer is
    cancelled and the yielded :class:`HangReport` holds the dump (``text``) and
    :func:`describe_hang`'s line (``description``); an exception leaving the block (a
    test timeout's, say) gets that line as a note on Python 3.11+.

    faulthandler has one such timer per process: this one replaces any armed before it
    (pytest's ``faulthandler_timeout``, for one), and none is left armed after the block.
    """
    with tempfile.TemporaryFile() as dump:
        report = HangReport(seconds, dump)
        faulthandler.dump_traceback_later(seconds, repeat=False, file=dump)
        try:
            yield report
        except BaseException as exc:
            report._finish()
            add_note = getattr(exc, "add_note", None)  # Python 3.11+
            if report.description is not None and add_note is not None:
                add_note(f"still running after {seconds:g} s, in {report.description}")
            raise
        report._finish()
