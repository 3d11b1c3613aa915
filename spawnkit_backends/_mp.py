"""What the ``fork`` and ``spawn`` backends share: a ``multiprocessing`` process and its handle."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import spawnkit
from spawnkit import plugin

from ._fds import readable
from ._mp_worker import Carried, worker

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.process import BaseProcess

__all__ = ["MultiprocessingBackend", "MultiprocessingHandle"]


# Past this size the pickled job would not fit the pipe through which multiprocessing hands
# a new process its arguments, and start() would wait for the child to boot and read them:
# ranks would start one after another. Larger payloads go down a pipe of their own.
_INLINE_PAYLOAD = 32 * 1024


class _Carrier:
    """Carries a spec into a new interpreter, its descriptors passed on the way.

    ``multiprocessing`` pickles a process's arguments while it spawns, and its spawning
    Popen has the child inherit each descriptor registered with it, under the same number.
    Not through ``reduction.DupFd``: its objects would cost every worker the import of two
    more ``multiprocessing`` modules (about 1 ms) to read back a number it already knows.
    """

    def __init__(self, spec: plugin.WorkerSpec, payload_fd: int | None, size: int) -> None:
        self.spec = spec
        self.payload_fd = payload_fd
        self.size = size

    def __reduce__(self) -> Any:
        if sys.platform == "win32":  # DupFd is POSIX-only: Windows passes handles instead
            raise OSError("multiprocessing cannot pass a worker its descriptors on Windows")
        else:  # noqa: RET506 - a platform branch type checkers understand
            from multiprocessing.context import get_spawning_popen

            popen = get_spawning_popen()
            if popen is None:
                raise RuntimeError("a rank's spec is pickled only while its process spawns")
            # Each number once: multiprocessing refuses one it passes twice ("bad value(s) in
            # fds_to_keep"), and passes the resource tracker's, which a job shares, itself.
            passed = set(getattr(popen, "_fds", ()))
            wanted = {*self.spec.fds, *([] if self.payload_fd is None else [self.payload_fd])}
            for fd in sorted(wanted - passed):
                popen.duplicate_for_child(fd)  # the spawn start method keeps the number
            return (Carried, (self.spec, list(self.spec.fds), self.payload_fd, self.size))


def _write_all(fd: int, data: bytes) -> None:
    # In a helper thread that blocks SIGPIPE: a worker that dies before reading it all
    # costs an EPIPE here, never the program's life.
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:  # the worker ended before reading it all: its failure says why
        pass
    finally:
        plugin.unmark_parent_only(fd)
        os.close(fd)


def _start_without_sigpipe(process: BaseProcess) -> None:
    """``process.start()``, with a dead reader costing ``EPIPE`` rather than SIGPIPE.

    multiprocessing writes the new process's preparation data to a pipe (spawn) without
    MSG_NOSIGNAL; a program that restored SIGPIPE's default
    action (common in command-line tools) would die if the reader were gone. The signal
    is blocked in this thread only, and a SIGPIPE that came up meanwhile is consumed.
    """
    import signal

    if sys.platform == "win32" or not hasattr(signal, "pthread_sigmask"):  # no SIGPIPE
        process.start()
    else:  # a platform branch type checkers understand
        # _signal's calls, not signal's: those turn each number of the answer into an enum,
        # and core starts ranks with every signal blocked (0.25 ms a rank, for nothing).
        import _signal  # type: ignore[import-not-found]  # no stubs; signal.py wraps it

        previous = _signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        try:
            process.start()
        finally:
            if signal.SIGPIPE not in previous and signal.SIGPIPE in _signal.sigpending():
                signal.sigwait({signal.SIGPIPE})  # pending: returns at once
            _signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class MultiprocessingHandle:
    """A worker started by ``multiprocessing`` (a :class:`spawnkit.plugin.ProcessHandle`)."""

    def __init__(self, process: BaseProcess, writer: threading.Thread | None = None) -> None:
        self._process = process
        self._writer = writer
        self._pid = process.pid  # still answered after close(), as the protocol asks
        # Why the exit status is unknown, once it is: core reads this (see _context).
        self.status_lost: str | None = None
        self._pidfd: int | None = None
        self._ended_r: int | None = None
        # multiprocessing's sentinel for fork and spawn is a pipe the worker holds open, and
        # so do grandchildren it forks; a pidfd turns readable when the worker itself ends.
        if hasattr(os, "pidfd_open") and process.pid is not None:
            try:
                self._pidfd = os.pidfd_open(process.pid)
                plugin.mark_parent_only(self._pidfd)
            except OSError:
                self._pidfd = None
        if (
            sys.platform != "win32"
            and hasattr(os, "waitid")  # macOS has none: multiprocessing's sentinel, then
            and self._pidfd is None
            and process.pid is not None
        ):
            # No pidfd (the BSDs, Linux < 5.3): a thread waits for the worker's exit
            # without reaping it, then closes a pipe of ours, which no grandchild holds.
            # (Windows and macOS have no waitid: multiprocessing's sentinel it is there.)
            self._ended_r, ended_w = os.pipe()
            plugin.mark_parent_only(self._ended_r, ended_w)
            plugin.start_helper_thread(
                _close_when_ended, process.pid, ended_w, name=f"spawnkit-wait-{process.pid}"
            )

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def sentinel(self) -> int:
        if self._pidfd is not None:
            return self._pidfd
        if self._ended_r is not None:
            return self._ended_r
        return self._process.sentinel

    def poll(self) -> int | None:
        status = self._process.exitcode
        if status is None and self._gone_unreaped():
            # It has ended, yet multiprocessing's waitpid() finds no child: another part of
            # the program reaped it (os.waitpid(-1) or os.wait()) and took its status.
            self.status_lost = (
                "the worker ended, but its exit status was collected by other code in this "
                "process (os.wait() or os.waitpid(-1, ...)) before spawnkit could read it"
            )
            status = 255
        if self.status_lost is not None and self._pidfd is not None:
            status = 255 if readable(self._pidfd) else None  # ended, how is unknown
        return status

    def _gone_unreaped(self) -> bool:
        ended = self._pidfd if self._pidfd is not None else self._ended_r
        if ended is None or not readable(ended):
            return False
        return self._process.exitcode is None  # looked again: still nothing to read

    def close(self) -> None:
        if self._writer is not None:
            # The worker has ended, so its end of the payload pipe is closed: the writer
            # is done, or fails at its next write and ends. Bounded all the same.
            self._writer.join(timeout=5.0)
            self._writer = None
        for fd in (self._pidfd, self._ended_r):
            if fd is not None:
                plugin.unmark_parent_only(fd)
                os.close(fd)
        self._pidfd = self._ended_r = None
        try:
            self._process.close()
        except ValueError:  # still running: given up after SIGKILL (see core's KILL_WAIT)
            pass


def _close_when_ended(pid: int, ended_w: int) -> None:
    try:
        if sys.platform != "win32":  # no waitid there (nor is this thread started there)
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except (ChildProcessError, OSError, AttributeError):
        pass
    finally:
        plugin.unmark_parent_only(ended_w)
        os.close(ended_w)


def _cuda_initialized() -> bool:
    """Whether this process has initialised CUDA through torch; never imports torch.

    Only a program that has loaded torch can have: importing it here would cost seconds.
    """
    torch = sys.modules.get("torch")
    is_initialized = getattr(getattr(torch, "cuda", None), "is_initialized", None)
    return callable(is_initialized) and bool(is_initialized())


class MultiprocessingBackend(plugin.LocalBackend):
    """Starts each rank as a ``multiprocessing`` process of the given start method."""

    def __init__(self, method: str) -> None:
        import multiprocessing

        if method == "fork" and _cuda_initialized():
            raise spawnkit.ConfigError(
                "backend 'fork' cannot run this job: this process has initialised CUDA "
                "(torch.cuda.is_initialized() is True), and a forked rank cannot use it (torch "
                "would fail inside the rank: 'Cannot re-initialize CUDA in forked "
                "subprocess'). Use backend 'spawn', 'forkserver' or 'subprocess', or start "
                "the job before the program's first use of CUDA"
            )
        if method != "fork":
            # Started now, not while core starts the ranks: core holds every signal then,
            # and a helper started meanwhile would keep that mask for good.
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
        self._method = method
        self._context: BaseContext = multiprocessing.get_context(method)
        # Loaded here, a fork child inherits the worker bootstrap instead of importing it
        # again in every rank, and what the bootstrap imports on first use (about 1 ms).
        self._run_worker = plugin.run_worker
        if method == "fork" and sys.platform != "win32":
            import faulthandler
            import resource

            self._preloaded = (faulthandler, resource)

    def start_process(self, spec: plugin.WorkerSpec) -> MultiprocessingHandle:
        arg: plugin.WorkerSpec | _Carrier = spec  # fork: inherited, fds keep their numbers
        payload = spec.payload
        pipe: tuple[int, int] | None = None
        if self._method != "fork":
            if payload is not None and len(payload) > _INLINE_PAYLOAD:
                pipe = os.pipe()
                plugin.mark_parent_only(*pipe)
                arg = _Carrier(spec.with_payload(None), pipe[0], len(payload))
            else:
                arg = _Carrier(spec, None, 0)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=worker, args=(arg,), name=f"spawnkit-rank-{spec.rank}", daemon=False
        )
        try:
            if self._method == "fork":
                process.start()  # a fork writes nothing to the child: no SIGPIPE to fear
            else:
                _start_without_sigpipe(process)
        except BaseException:
            if pipe is not None:
                plugin.unmark_parent_only(*pipe)
                os.close(pipe[0])
                os.close(pipe[1])
            raise
        writer = None
        if pipe is not None:
            assert payload is not None
            plugin.unmark_parent_only(pipe[0])
            os.close(pipe[0])  # the child has its own copy now
            writer = plugin.start_helper_thread(
                _write_all, pipe[1], payload, name=f"spawnkit-payload-{spec.rank}"
            )
        return MultiprocessingHandle(process, writer)
