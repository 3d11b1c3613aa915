"""Workers, grandchildren and a held watch for the parent-death tests.

Imported by every worker of those tests, so it imports only the standard library. Workers
report to the harness with one JSON line per event, written in one ``write()`` to a FIFO.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._protocols import ChildWatch, ParentWatch
    from .._spec import WorkerSpec

# How a rank meets SIGTERM: "handler" keeps spawnkit's (Terminated, so finally blocks run),
# "default" dies at once, "ignore" ignores it, "catch" catches Terminated and returns,
# "linger" catches Terminated, reports, and goes on until SIGKILL.
SIGTERM_MODES = ("handler", "default", "ignore", "catch", "linger")


def posix_only() -> OSError:
    """What the harness raises on Windows, where the suite skips it: no FIFOs, no fork()."""
    return OSError(f"the parent-death harness runs on POSIX systems only, not {sys.platform}")


def report(fifos: Sequence[str], **event: Any) -> None:
    """Send ``event`` to every FIFO; never blocks, and a FIFO nobody reads is skipped."""
    if sys.platform == "win32":
        raise posix_only()
    else:  # noqa: RET506 - a platform branch type checkers understand
        data = (json.dumps(event) + "\n").encode()
        for fifo in fifos:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader: the harness is gone
                continue
            try:
                os.write(fd, data)  # under PIPE_BUF: one atomic write, never interleaved
            except OSError:
                pass
            finally:
                os.close(fd)


def signal_wakeup() -> int:
    """A pipe the interpreter writes every caught signal to; its read end.

    ``signal.pause()`` sleeps on if the signal arrives just before it is entered (Python
    runs the handler only once pause() returns); a read of this pipe always returns, and
    then the handler runs. Set up before the process says it is ready, so no signal can
    come first. For the grandchildren, which have no spawnkit to nudge them.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return read_end


def wait_for_signals(read_end: int) -> NoReturn:
    """Block until a signal's handler ends the process (see :func:`signal_wakeup`)."""
    while True:
        os.read(read_end, 64)


def block_forever() -> NoReturn:
    """Sleep until a signal ends the process; signal handlers still run."""
    if sys.platform == "win32":
        raise posix_only()
    else:  # noqa: RET506 - a platform branch type checkers understand
        while True:
            signal.pause()


def _on_ping(fifos: Sequence[str]) -> Callable[[int, Any], None]:
    def answer(signum: int, frame: Any) -> None:
        report(fifos, event="alive", pid=os.getpid())

    return answer


def answer_pings(fifos: Sequence[str]) -> None:
    """Answer every SIGUSR1 (the harness's ping) with an ``alive`` report, from now on.

    For a worker, whose main thread sleeps in ``signal.pause()``. A Python handler would
    not do: it runs only when the main thread next executes bytecode, and a ping that
    arrives after that check but before ``pause()`` is entered is noted and never acted
    on (spawnkit's nudge thread mends this for SIGTERM alone). The harness pings the moment
    the last ``armed`` report is in, so a worker preempted on its way from that report
    into ``pause()`` would sleep through it and count as gone. Instead SIGUSR1 is blocked
    in every thread and stays pending until a thread of its own takes it in ``sigwait()``:
    no moment at which a ping can be lost. That thread blocks every other signal, so
    SIGTERM still goes to the main thread. Call it before reporting ready, and after the
    last fork: a child would inherit the blocked SIGUSR1, not the thread.
    """
    if sys.platform == "win32":
        raise posix_only()
    else:  # noqa: RET506 - a platform branch type checkers understand
        import _thread

        running = _thread.allocate_lock()
        running.acquire()

        def answer() -> None:
            running.release()
            while True:
                signal.sigwait({signal.SIGUSR1})
                report(fifos, event="alive", pid=os.getpid())

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            _thread.start_new_thread(answer, ())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        # Returns once the thread runs, as spawnkit's own helper threads do: one that starts
        # late could begin while a rank that returns at once finalizes the interpreter.
        running.acquire()


def _grandchild(fifos: Sequence[str], rank: int, on_sigterm: str) -> int:
    """Fork a child that blocks forever; return its pid once its signal setup is done."""
    if sys.platform == "win32":
        raise posix_only()
    else:  # noqa: RET506 - a platform branch type checkers understand
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_read)
                if on_sigterm == "ignore":
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                else:

                    def cleanup(signum: int, frame: Any) -> None:
                        report(fifos, event="cleanup", rank=rank, pid=os.getpid(), grandchild=True)
                        os._exit(0)

                    signal.signal(signal.SIGTERM, cleanup)
                signal.signal(signal.SIGUSR1, _on_ping(fifos))
                wakeup = signal_wakeup()
                os.write(ready_write, b".")
                os.close(ready_write)
                wait_for_signals(wakeup)
            finally:
                os._exit(1)
        os.close(ready_write)
        os.read(ready_read, 1)
        os.close(ready_read)
        return pid


def _wait_for_go(path: str) -> None:
    # The harness keeps the FIFO open for writing too, so open() does not block and each
    # rank's read() takes one of the bytes the job's parent writes.
    fd = os.open(path, os.O_RDONLY)
    try:
        while not os.read(fd, 1):
            pass
    finally:
        os.close(fd)


def worker(rank: int, config: dict[str, Any]) -> int:
    """A rank for the harness: start grandchildren, report ``armed``, block (or wait for go).

    ``config``: ``fifos`` (where to report), ``tag`` (which job), ``children`` (how many
    grandchildren), ``child_sigterm`` (``"handler"`` or ``"ignore"``), ``sigterm`` (one
    of :data:`SIGTERM_MODES` per rank, cycled), ``go`` (a FIFO to wait on, then return).
    """
    if sys.platform == "win32":
        raise posix_only()
    else:  # noqa: RET506 - a platform branch type checkers understand
        fifos = config["fifos"]
        modes = config.get("sigterm") or ["handler"]
        mode = modes[rank % len(modes)]
        children = [
            _grandchild(fifos, rank, config.get("child_sigterm", "handler"))
            for _ in range(config.get("children", 0))
        ]
        if mode == "default":
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        elif mode == "ignore":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        answer_pings(fifos)
        try:
            # Inside the try: the harness may kill the parent the moment this report is out,
            # and the SIGTERM that follows can land before report() has returned.
            report(
                fifos,
                event="armed",
                tag=config.get("tag", ""),
                rank=rank,
                pid=os.getpid(),
                pgid=os.getpgid(0),
                children=children,
            )
            if config.get("go"):
                _wait_for_go(config["go"])
                return os.getpid()
            block_forever()
        except BaseException:  # Terminated, from the watch or from terminate()
            report(fifos, event="cleanup", rank=rank, pid=os.getpid(), grandchild=False)
            if mode == "catch":
                return -1
            if mode == "linger":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                block_forever()
            raise


def cli_worker(rank: int, config_json: str) -> int:
    """:func:`worker` for ``spawnkit run``, which passes arguments as strings."""
    return worker(rank, json.loads(config_json))


class HeldParent:
    """Wraps a real parent watch so its workers arm only after the job is dead.

    The only way to make "the parent died before the watch was armed" happen on purpose:
    the real child half then arms against a parent that is certainly gone.
    """

    def __init__(self, inner: ParentWatch, fifos: Sequence[str]) -> None:
        self._inner = inner
        self._fifos = list(fifos)

    def child_watch(self) -> HeldChild:
        return HeldChild(self._inner.child_watch(), self._fifos)

    def fds(self) -> tuple[int, ...]:
        return self._inner.fds()

    def private_fds(self) -> tuple[int, ...]:
        return self._inner.private_fds()

    def close(self) -> None:
        self._inner.close()


class HeldChild:
    """Reports ``holding``, waits until the job and the direct parent are gone, then arms."""

    def __init__(self, inner: ChildWatch, fifos: Sequence[str]) -> None:
        self.inner = inner
        self.fifos = fifos
        self.name = f"held-{inner.name}"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            report(self.fifos, event="holding", pid=os.getpid(), pgid=os.getpgid(0))
            deadline = time.monotonic() + 60
            assert spec.job_pid is not None  # a local worker's spec
            while os.getppid() == spec.parent_pid or _exists(spec.job_pid):
                if time.monotonic() > deadline:
                    raise RuntimeError("the harness did not kill the job within 60 s")
                time.sleep(0.002)
            self.inner.arm(fds, spec, shutdown)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_in_and_wait(rank: int, folder: str) -> int:
    """Create ``folder/started-RANK``, then wait (bounded) until ``folder/go`` exists."""
    with open(os.path.join(folder, f"started-{rank}"), "w"):
        pass
    go = os.path.join(folder, "go")
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {go} within 60 s")
        time.sleep(0.005)
    return rank
