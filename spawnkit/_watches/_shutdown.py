"""What a local worker does once its parent watch finds the job gone: stop its whole group.

Every watch's child half calls :func:`parent_gone`; a worker that dies of SIGTERM calls
:func:`die_of_sigterm`. Imported in every local worker: standard library only.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import time

from .._tree import own_group, signal_own_group

__all__ = ["die_of_sigterm", "job_gone", "parent_gone"]

# Set once the job is known to be gone. A lock, not a flag, makes parent_gone() run once
# when two paths find out together (arm()'s own check and the watch's thread).
_gone = _thread.allocate_lock()
# Whether a reaper process will SIGKILL this worker's group when the grace period ends.
_reaper_started = False
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL


def parent_gone(grace_period: float) -> None:
    """Shut this worker and every process in its group down: the job's process is gone.

    Called by the parent watch, from its thread, or from ``arm()`` itself when the job was
    gone before the watch was armed; runs once however often it is called. SIGTERM to the
    group first, so the worker's and its children's cleanup runs; SIGKILL to the group once
    ``grace_period`` seconds have passed, for whatever ignored it.

    The SIGKILL comes from a separate reaper process, because by then the worker may be gone
    while its children are not: a worker can die of SIGTERM at once (its own ``SIG_DFL``),
    catch it and return, or finish its cleanup early, and a child that ignores SIGTERM would
    outlive it. The reaper leads a group of its own, so the SIGTERM misses it, and it ends
    as soon as the worker's group is empty.
    """
    global _reaper_started
    if not _gone.acquire(False):
        return
    group = own_group()
    if group is not None and grace_period > 0:
        _reaper_started = _start_reaper(group, grace_period)
    signal_own_group(signal.SIGTERM)
    if not _reaper_started:
        # No reaper (Windows, fork failed, no grace): this thread keeps the bound; if the
        # worker ends first, die_of_sigterm() kills the group on its way out.
        time.sleep(grace_period)
        signal_own_group(_SIGKILL)


def job_gone() -> bool:
    """Whether :func:`parent_gone` has run in this process: the job is known to be gone."""
    return _gone.locked()


def die_of_sigterm() -> None:
    """End this worker by its own SIGTERM, at the default action, as the stop asked.

    When the job is gone and no reaper will SIGKILL what ignored the SIGTERM, the group
    gets its SIGKILL now.
    """
    from .._signals.sigterm import restore_default
    from .._worker import flush as flush_streams

    restore_default()
    if _gone.locked() and not _reaper_started:
        signal_own_group(_SIGKILL)
    flush_streams()
    os.kill(os.getpid(), signal.SIGTERM)


def _start_reaper(group: int, grace_period: float) -> bool:
    if sys.platform == "win32":  # no fork; no process group to reap there either
        return False
    else:  # a platform branch type checkers understand
        try:
            pid = os.fork()
        except (AttributeError, OSError):
            return False
        if pid == 0:
            try:
                _reap(group, grace_period)
            finally:
                os._exit(0)
        try:
            # Both sides move the reaper, so it is out of the group before the SIGTERM below,
            # whichever of the two runs first.
            os.setpgid(pid, pid)
        except OSError:
            pass
        return True


def _reap(group: int, grace_period: float) -> None:
    # Forked from a thread of a multithreaded worker, the reaper could in theory deadlock
    # on a lock some other thread held; SIGALRM's default action bounds its life anyway.
    # That thread (the watch's) blocks every signal, and a fork keeps its mask.
    if sys.platform == "win32":  # never forked there (see _start_reaper)
        return
    else:  # a platform branch type checkers understand
        if hasattr(signal, "alarm") and hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            signal.alarm(int(grace_period) + 2)
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                signal.signal(signum, signal.SIG_IGN)
            except ValueError:  # not Python's main thread after all: still bounded by the grace
                pass
        _close_all_fds()
        deadline = time.monotonic() + grace_period
        while True:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:  # the group is empty: nothing left to kill
                return
            except OSError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.01))
        try:
            os.killpg(group, _SIGKILL)
        except OSError:
            pass


def _close_all_fds() -> None:
    # The reaper holds nothing of the worker's: a socket or pipe copy kept open here would
    # keep the other end from seeing the worker go.
    try:
        fds = [int(name) for name in os.listdir("/dev/fd")]
    except OSError:
        fds = list(range(256))
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
