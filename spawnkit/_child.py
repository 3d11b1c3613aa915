"""A local worker process: the setup around a rank that runs in a process of its own.

A local backend's process calls :func:`run_worker` first thing. It leads its own process
group, turns SIGTERM into :class:`Terminated`, arms the parent watch, keeps the job's
descriptors to itself, then runs the rank (``spawnkit._worker``) and sends the report home
down the result channel. Imports here are kept to what every worker needs: start-up cost is
a feature.
"""

from __future__ import annotations

import os
import signal
import sys

from . import _wire, _worker
from ._fds import identity
from ._signals import mask, sigterm
from ._signals.sigterm import Terminated
from ._signals.threads import wait_running
from ._spec import PARENT_ONLY_FDS, WorkerSpec
from ._watches._shutdown import die_of_sigterm, job_gone, parent_gone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._protocols import ChildWatch

__all__ = ["Terminated", "run_worker"]

# (descriptor, device, inode) of the result channel as the worker received it.
_channel: tuple[int, int, int] | None = None


def _setup(spec: WorkerSpec) -> None:
    global _channel
    if spec.sigmask is not None and sys.platform != "win32":
        # The job blocked every signal while it started ranks; this is the mask its thread
        # had before. A signal sent meanwhile (an early SIGTERM) is delivered now.
        mask.set_mask(spec.sigmask)
    # A copy of the parent (fork) had the parent's side of its jobs closed at the fork
    # (spawnkit._context); whatever else it inherited is the program's, and stays.
    PARENT_ONLY_FDS.clear()
    if spec.result_fd is None:
        raise ValueError(
            "run_worker() needs a spec with a result descriptor (a local backend's); a "
            "worker hosted elsewhere calls spawnkit.plugin.run_rank() and carries its report"
        )
    _channel = identity(spec.result_fd)
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:  # already a session leader: its group is its own anyway
            pass
    _point_streams(spec)
    if spec.faulthandler:
        import faulthandler

        # Into the rank's own stderr when that is its log: a fork inherits the parent's
        # setting, which may name the parent's file.
        if 2 in spec.streams or not faulthandler.is_enabled():
            try:
                # The descriptor, not sys.stderr: that may be None, or an object of the
                # program's without one (a notebook's stream, in a fork).
                faulthandler.enable(file=2)
            except (OSError, ValueError, RuntimeError):  # descriptor 2 closed: no trace, then
                pass
    try:
        sigterm.install()
        _worker.stop_hook = sigterm.raise_if_stopped
    except ValueError:  # not the main thread: a backend running ranks in threads
        pass
    _worker.phase = _worker.RUNNING
    for fd in spec.watch_fds:
        os.set_inheritable(fd, False)
    watch: ChildWatch | None = spec.watch
    if watch is not None:
        grace = spec.grace_period
        watch.arm(spec.watch_fds, spec, lambda: parent_gone(grace))
        if job_gone():
            # arm() found the job gone and sent its group SIGTERM, which the main thread may
            # only see after fn has begun (a signal caught by another thread waits for the
            # main thread's next check, and Python 3.9 does not even ask it to look).
            raise sigterm.stop_before_start()
    _send(spec, _wire.STARTED, b"")


def _point_streams(spec: WorkerSpec) -> None:
    """Point the redirected standard streams at their log file or relay pipe.

    At the descriptor level, so a C extension's writes and a subprocess's output go there
    too. Line-buffered from here on: a rank's lines reach the log (or the console, through
    the parent) as they are printed, not when a buffer fills or the rank ends.
    """
    for target, fd in zip(spec.streams, spec.stream_fds, strict=True):
        name = "stdout" if target == 1 else "stderr"
        stream = getattr(sys, name)
        try:
            stream.flush()
            own = stream.fileno() == target
        except (AttributeError, OSError, ValueError):
            own = False
        os.dup2(fd, target)
        os.close(fd)
        if not own:
            # sys.stdout was not descriptor 1 (a fork of a notebook kernel, of a test
            # runner that captures output): Python's writes would miss the redirection.
            setattr(sys, name, open(target, "w", buffering=1, closefd=False))  # noqa: SIM115
            continue
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, OSError, ValueError):
            pass


def _send(spec: WorkerSpec, kind: bytes, body: bytes) -> bool:
    """Send a message if the result channel is still the one the parent gave us.

    User code may have closed it (``os.closerange``) and opened a file under the same
    number: writing then would put the pickled outcome into the user's file. ``False``
    when the channel is gone; a parent that went away is not that, the watch handles it.
    """
    if _channel is None or spec.result_fd is None or identity(spec.result_fd) != _channel:
        return False
    try:
        _wire.send(spec.result_fd, kind, body)
    except OSError:  # the parent is gone; the watch takes it from here
        pass
    return True


def _report(spec: WorkerSpec, report: _wire.Report) -> int:
    """Send the report home; the exit status the process should end with."""
    status = report.status
    # Before the report: the parent stops a failed rank as soon as its report arrives.
    _worker.flush()
    if report.kind:
        if not _send(spec, report.kind, report.body):
            # Nothing on stderr either: descriptor 2 may be the user's file by now. The
            # parent recognises the status, since no outcome came with it.
            status = _wire.LOST_CHANNEL_STATUS
        else:
            if spec.result_fd is not None:
                try:
                    os.close(spec.result_fd)
                except OSError:
                    pass
            if report.kind == _wire.ERROR:
                _stoppable()
    return status


def _stoppable() -> None:
    """The failure is out: from here a stop ends this process at once.

    The parent acts on an error report as it arrives and stops this rank with the others,
    while this process may still be ending for seconds (a non-daemon thread, a library's
    teardown at exit), past the point where a SIGTERM raises. Nothing is left to protect:
    SIGTERM gets its default action back, and one that came meanwhile is acted on now.
    A handler of the program's own (inherited by a fork) is left alone.
    """
    if signal.getsignal(signal.SIGTERM) is not sigterm._on_sigterm:
        return
    sigterm.restore_default()
    if sigterm.stop_requested():
        raise Terminated("worker received SIGTERM")


def run_worker(spec: WorkerSpec) -> int:
    """Run one rank in this process and return the exit status the process should end with.

    A local backend calls this first thing in the new process, then exits with the returned
    status (``sys.exit(run_worker(spec))``). It never raises: the outcome travels to the
    parent through the spec's result descriptor.
    """
    try:
        try:
            _setup(spec)
        except Terminated:
            raise
        except BaseException as exc:  # noqa: BLE001 - the setup's failure is the rank's
            _worker.phase = _worker.REPORTING
            return _report(spec, _wire.Report(_wire.ERROR, _worker.error_body(exc), 1))
        return _report(spec, _worker.run_rank(spec))
    except Terminated:
        die_of_sigterm()
        return 128 + signal.SIGTERM
    finally:
        # The helper threads were not waited for at their start (see start_thread); the
        # process may end as soon as this returns.
        wait_running()
