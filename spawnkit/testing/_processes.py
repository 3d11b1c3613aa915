"""Finding the processes a test left behind: every descendant, however deep.

On Linux the test process makes itself a child subreaper (:func:`become_subreaper`, from
:func:`leak_guard`): a process whose parent dies is then re-parented to the test process
instead of init, so what a wrong backend orphans stays a descendant, found and killed at
the end of the guarded block instead of living on. The price: such an orphan, once it
exits, is a zombie of the test process, and nothing else here knows to reap it.
:func:`wait_gone` and :func:`leak_guard` do (see :func:`wait_gone` for which zombies).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

__all__ = [
    "COMMAND_WIDTH",
    "PR_SET_CHILD_SUBREAPER",
    "ZOMBIE",
    "become_subreaper",
    "command_line",
    "descendants",
    "infrastructure_pids",
    "kill_all",
    "leak_guard",
    "short_command",
    "wait_for_files",
    "wait_gone",
]

PR_SET_CHILD_SUBREAPER = 36
#: The state :func:`descendants` gives a process that ended and is not reaped yet.
ZOMBIE = psutil.STATUS_ZOMBIE
# After SIGKILL, how long leak_guard waits for the leftovers to be gone: a bound for a
# loaded machine, never waited out unless a process survives SIGKILL (D state).
KILL_TIMEOUT = 10.0

_subreaper: tuple[int, bool] | None = None  # (pid that asked, answer): fork does not inherit it


def become_subreaper() -> bool:
    """Adopt orphaned descendants instead of init (Linux); ``False`` where impossible.

    Asked of the kernel once per process (``prctl(PR_SET_CHILD_SUBREAPER, 1)``); a fork
    child is not a subreaper, and asks again. Elsewhere (macOS has no such thing) it does
    nothing and says ``False``.
    """
    global _subreaper
    if _subreaper is not None and _subreaper[0] == os.getpid():
        return _subreaper[1]
    if not sys.platform.startswith("linux"):
        done = False
    else:  # not a fall-through: mypy would call it unreachable off Linux
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        libc.prctl.restype = ctypes.c_int
        done = bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    _subreaper = (os.getpid(), done)
    return done


def _states(processes: Iterable[psutil.Process]) -> dict[int, tuple[int, str]]:
    """``pid -> (ppid, status)`` of those of ``processes`` still there (``psutil``
    statuses: ``"zombie"`` is :data:`ZOMBIE`)."""
    table: dict[int, tuple[int, str]] = {}
    for process in processes:
        try:
            with process.oneshot():  # one read of /proc/PID/stat for both
                table[process.pid] = (process.ppid(), process.status())
        except psutil.Error:  # gone while we looked
            pass
    return table


def _process_table(root: int) -> dict[int, tuple[int, str]]:
    """``pid -> (ppid, status)`` for every process below ``root``.

    The tree is walked from one map of every process's parent, and only the processes
    below ``root`` are looked at closer: a scan of the whole machine cost each test tens of
    milliseconds, twice over.
    """
    try:
        below = psutil.Process(root).children(recursive=True)
    except (psutil.Error, ValueError):  # root is gone (or no pid): nothing below it either
        return {}
    return _states(below)


def _pid_table(pids: Iterable[int]) -> dict[int, tuple[int, str]]:
    """``pid -> (ppid, status)`` for those of ``pids`` still there, wherever they are."""
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except (psutil.Error, ValueError):  # gone, or no pid at all (-1: a remote worker's)
            pass
    return _states(processes)


def infrastructure_pids() -> set[int]:
    """Long-lived helpers kept per parent: not leaks, but their children (forkserver
    workers) are: ``multiprocessing``'s fork server and resource tracker, and those a
    backend marked (:func:`spawnkit.plugin.mark_helper_process`)."""
    from .._spec import HELPER_PIDS

    found: set[int] = set(HELPER_PIDS)
    try:
        from multiprocessing import forkserver, resource_tracker

        for obj, attr in (
            (forkserver._forkserver, "_forkserver_pid"),
            (resource_tracker._resource_tracker, "_pid"),
        ):
            pid = getattr(obj, attr, None)
            if isinstance(pid, int):
                found.add(pid)
    except ImportError:
        pass
    return found


def _states_without(table: dict[int, tuple[int, str]], exclude: Iterable[int]) -> dict[int, str]:
    """``pid -> status`` of ``table`` (a subtree, from :func:`_process_table`), but ``exclude``."""
    skip = set(exclude)
    return {pid: status for pid, (_, status) in table.items() if pid not in skip}


def descendants(root: int | None = None, exclude: Iterable[int] = ()) -> dict[int, str]:
    """Every process below ``root`` (default: this one), ``pid -> state`` (a ``psutil``
    status, :data:`ZOMBIE` for a zombie); reaps nothing.

    Processes in ``exclude`` are left out, but their own children are still listed.
    """
    return _states_without(_process_table(os.getpid() if root is None else root), exclude)


def _zombie_children(pids: Iterable[int], table: dict[int, tuple[int, str]]) -> set[int]:
    """Those of ``pids`` that are zombies of this process, multiprocessing's helpers aside:
    the stdlib waitpid()s those itself, and would fail with ChildProcessError."""
    me = os.getpid()
    zombies = {pid for pid in pids if table.get(pid) == (me, ZOMBIE)}
    return zombies - infrastructure_pids() if zombies else zombies


def _held_pids() -> set[int]:
    """Children a live ``subprocess.Popen`` or ``multiprocessing`` process object here
    still means to wait for: their exit status is theirs to collect."""
    kinds: list[type] = [subprocess.Popen]
    fork_popen = sys.modules.get("multiprocessing.popen_fork")
    if fork_popen is not None:
        kinds.append(fork_popen.Popen)
    # A forkserver worker is the fork server's child: its object never waitpid()s it.
    server_popen = sys.modules.get("multiprocessing.popen_forkserver")
    foreign: tuple[type, ...] = (server_popen.Popen,) if server_popen is not None else ()
    wanted = tuple(kinds)
    held: set[int] = set()
    for obj in gc.get_objects():
        # type(), not isinstance(): no attribute lookup on arbitrary objects (proxies).
        cls = type(obj)
        if issubclass(cls, wanted) and not issubclass(cls, foreign):
            pid = getattr(obj, "pid", None)
            if isinstance(pid, int) and getattr(obj, "returncode", 0) is None:
                held.add(pid)
    return held


def _reap(pids: Iterable[int]) -> set[int]:
    """``waitpid(WNOHANG)`` each of ``pids`` (zombie children); return the ones now gone."""
    if sys.platform == "win32":
        return set()
    else:  # a platform branch type checkers understand
        gone: set[int] = set()
        for pid in pids:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # another thread reaped it since we looked: gone all the same
            if done == pid:
                gone.add(pid)
        return gone


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to disappear; return those still there.

    A zombie counts as still there, with one exception, reaped here (``waitpid`` with
    ``WNOHANG``) and then counted as gone: a zombie whose parent is this process and that
    nothing else in this process will wait for, which is what an orphan adopted as a
    subreaper is. Never reaped here, so still counted:

    - ``multiprocessing``'s fork server and resource tracker (:func:`infrastructure_pids`):
      the stdlib waits for those itself, and would crash with ``ChildProcessError``;
    - a child that a live ``subprocess.Popen`` or ``multiprocessing`` process object in
      this process has not waited for yet (``returncode`` still ``None``): taking its
      status would make that object report a wrong one. Its owner reaps it, as before.

    A child started some other way (``os.fork`` and a pid kept by hand) cannot be told
    from an adopted orphan, and is reaped here once it is a zombie: wait for your own
    children before asking this about them.
    """
    remaining = set(pids)
    deadline = time.monotonic() + timeout
    held: set[int] | None = None  # a zombie's owner exists before it does: looked up once
    while remaining:
        table = _pid_table(remaining)
        remaining = {pid for pid in remaining if pid in table}
        zombies = _zombie_children(remaining, table)
        if zombies:
            if held is None:
                held = _held_pids()
            remaining -= _reap(zombies - held)
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return remaining


def wait_for_files(*paths: Path, timeout: float = 30.0) -> None:
    """Wait until every path exists: how a worker says it got somewhere. Fails after
    ``timeout`` seconds naming the ones that never appeared."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            missing = [str(p) for p in paths if not p.exists()]
            raise AssertionError(f"never appeared: {', '.join(missing)}")
        time.sleep(0.005)


def _protected_groups(spare: Iterable[int]) -> set[int]:
    """Process groups never to signal: 0 (killpg's word for our own) and 1 (init's); ours,
    our parent's (tox, a shell script) and our session leader's (the user's shell), where
    processes the test never started live; and those of the processes in ``spare``."""
    if sys.platform == "win32":
        return {0, 1}
    else:  # a platform branch type checkers understand
        groups = {0, 1, os.getpgid(0), os.getsid(0)}
        for pid in (os.getppid(), *spare):
            try:
                groups.add(os.getpgid(pid))
            except OSError:  # gone
                pass
        return groups


def _kill(pids: Iterable[int], spare_groups: set[int] | None = None) -> None:
    """SIGKILL ``pids``, and with ``spare_groups`` the group of each, but those."""
    if sys.platform == "win32":  # no SIGKILL; os.kill() terminates outright anyway
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    else:  # a platform branch type checkers understand
        for pid in pids:
            try:
                if spare_groups is not None:
                    # spawnkit's workers lead a group of their own: whatever they started
                    # is in it, including what a scan of the process tree missed.
                    group = os.getpgid(pid)
                    if group not in spare_groups:
                        os.killpg(group, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL ``pids`` and reap the ones that are this process's children."""
    pids = list(pids)
    _kill(pids)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except (ChildProcessError, OSError):
            pass


# A leftover's command line in a leak message: enough to tell which process it is, short
# enough that several leftovers fit in the lines of a test report.
COMMAND_WIDTH = 120
# A path longer than this shows as ".../" and its last part, the name that tells what it is.
_PATH_WIDTH = 40
# Interpreter options whose value is the next word; "-c" and "-m" end the options (python).
_VALUED_OPTIONS = frozenset({"-W", "-X", "--check-hash-based-pycs"})


def _short_word(word: str) -> str:
    """``word`` on one line, a long path as ``.../name``, long code or text cut at its end."""
    if "/" in word.rstrip("/") and not any(c.isspace() for c in word):
        return word if len(word) <= _PATH_WIDTH else ".../" + word.rstrip("/").rsplit("/", 1)[1]
    text = " ".join(word.split())
    return text if len(text) <= _PATH_WIDTH else text[: _PATH_WIDTH - 3] + "..."


def short_command(argv: list[str], width: int = COMMAND_WIDTH) -> str:
    """``argv`` as one line of about ``width`` characters, cut in the middle if longer.

    What names the process stays whole: the program and what it runs (the first word after
    the interpreter's options: a script, or the module or code of ``-m`` or ``-c``), each
    long path shortened to its last part; then as many of the last words as fit. Never a cut
    at a fixed length: a checkout in a long path would push the script's name out of it.
    """
    line = " ".join(argv)
    if len(line) <= width:
        return line
    subject = 1
    while subject < len(argv) and argv[subject].startswith("-") and argv[subject] != "-":
        if argv[subject] in ("-c", "-m"):
            subject += 1
            break
        subject += 2 if argv[subject] in _VALUED_OPTIONS else 1
    head = [_short_word(word) for word in argv[: subject + 1]]
    rest = [_short_word(word) for word in argv[subject + 1 :]]
    room = width - len(" ".join(head)) - len(" ...")
    tail: list[str] = []
    while rest and len(rest[-1]) + 1 <= room:
        room -= len(rest[-1]) + 1
        tail.insert(0, rest.pop())
    return " ".join([*head, *(["..."] if rest else []), *tail])


def command_line(pid: int) -> list[str]:
    """``pid``'s command line; empty if it has none to tell (a zombie) or is gone."""
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def _describe(pid: int, state: str) -> str:
    """``pid (state, command line)``."""
    argv = command_line(pid)
    command = short_command(argv) if argv else ""
    return f"{pid} ({state}, {command})" if command else f"{pid} ({state})"


def _sweep(before: set[int], timeout: float) -> dict[int, str]:
    """SIGKILL every process below this one that is not in ``before``, with its group, and
    reap those that end up our zombies, until none is left or ``timeout`` passed; return
    the ones still there (``pid -> state``).

    A group that a process of ``before`` or multiprocessing's helpers belongs to is spared:
    killing it would take down what the block did not start (a session fixture's server).
    """
    deadline = time.monotonic() + timeout
    while True:
        table = _process_table(os.getpid())
        helpers = infrastructure_pids()
        left = _states_without(table, helpers)
        new = set(left) - before
        # The block is over: a Popen or Process object still holding one of these would
        # have been a leak all the same, and its zombie goes too.
        new -= _reap(_zombie_children(new, table))
        if not new or time.monotonic() >= deadline:
            return {pid: left[pid] for pid in new}
        _kill(new, _protected_groups(before | helpers))
        time.sleep(0.01)


@contextmanager
def leak_guard(timeout: float = 10.0) -> Iterator[None]:
    """Raise ``AssertionError`` if the block leaves a process behind, naming each one.

    On entry it makes this process a child subreaper (Linux, once per process; see
    :func:`become_subreaper`), so that a process orphaned below it stays below it, and
    takes note of what already runs below it (multiprocessing's helpers aside).

    When the block ends, a leftover is a process below this one that was not there at
    entry and is still there ``timeout`` seconds later (:func:`wait_gone`: zombies count,
    except adopted orphans, which are reaped). If there is any, every process new below
    this one is killed with SIGKILL, and with it its process group (never this process's
    own), so that members the scan missed go too; the zombies this leaves us are reaped,
    waiting up to ``KILL_TIMEOUT`` seconds; then the error names the leftovers, and any
    that outlived SIGKILL.

    If the block raises, its exception is left as it is, but whatever new runs below
    this process is killed all the same, at once: one failing test must not leave
    processes behind for the next.
    """
    become_subreaper()
    before = set(descendants(exclude=infrastructure_pids()))
    try:
        yield
    except BaseException:
        _sweep(before, KILL_TIMEOUT)
        raise
    new = set(descendants(exclude=infrastructure_pids())) - before
    leaked = wait_gone(new, timeout)
    if not leaked:
        return
    states = descendants()
    detail = ", ".join(_describe(pid, states.get(pid, "?")) for pid in sorted(leaked))
    survivors = _sweep(before, KILL_TIMEOUT)
    message = f"left processes behind: {detail}"
    if survivors:
        still = ", ".join(f"{pid} ({state})" for pid, state in sorted(survivors.items()))
        message += f"; still there after SIGKILL: {still}"
    raise AssertionError(message)
