"""Stopping ranks: SIGTERM (a backend's graceful stop), a grace period, SIGKILL, a bounded wait."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from ._errors import StopError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._outcome import Rank

__all__ = ["logger", "stop"]


def logger() -> logging.Logger:
    """``spawnkit``'s logger; torch's, once the program has imported torch.

    A program ported from ``torch.multiprocessing`` may watch torch's logger for the stop
    messages (its tests do): with torch loaded they go where torch would put them.
    """
    if "torch" in sys.modules:
        return logging.getLogger("torch.multiprocessing.spawn")
    return logging.getLogger("spawnkit")


def stop(
    targets: list[Rank],
    grace: float,
    kill_wait: float,
    wait_ended: Callable[[list[Rank], float], object],
    announce: Callable[[str], None],
) -> None:
    """Stop ``targets`` gracefully, then by force after ``grace`` s; wait ``kill_wait`` s more.

    ``wait_ended(ranks, deadline)`` waits until every one of ``ranks`` ended or ``deadline``.
    """
    # A rank that failed and is still ending gets the same stop, but is not told of as
    # one: whether it is still there is a race with its own exit (torch's stop never sees
    # it), and the job's messages must not depend on that race.
    unfailed = [r for r in targets if r.failure is None]
    if unfailed:
        announce(f"stopping {_ranks(len(unfailed))} (SIGTERM, then SIGKILL after {grace:g} s)...")
    # A rank the system will not let us signal: waiting for it to stop would only pretend,
    # and SIGKILL is refused the same way (see the end).
    refused: set[int] = set()
    for r in targets:
        r.killed = True
        if r.failure is not None:
            logger().debug("Stopping process %s of rank %s, which failed", r.handle.pid, r.rank)
        elif r.handle.pid is None:
            logger().warning("Stopping rank %s (a worker elsewhere), gracefully", r.rank)
        else:
            logger().warning("Terminating process %s via signal SIGTERM", r.handle.pid)
        try:
            r.handle.stop()
        except PermissionError:
            refused.add(r.rank)
    signalled = [r for r in targets if r.rank not in refused]
    wait_ended(signalled, time.monotonic() + grace)
    stubborn = [r.rank for r in signalled if r.status is None]
    if stubborn:
        announce(
            f"{_ranks(len(stubborn))} still running after {grace:g} s: SIGKILL to "
            + ", ".join(f"rank {rank}" for rank in stubborn)
        )
    # Also the ranks that ended meanwhile: a grandchild that ignored SIGTERM is still in its
    # dead parent's group, and that group id stays reserved while it is.
    unkillable: dict[int, tuple[Rank, PermissionError]] = {}
    for r in targets:
        if r.status is None and r.handle.pid is None:
            logger().warning("Rank %s did not stop in time; stopping it by force", r.rank)
        elif r.status is None:
            logger().warning(
                "Unable to shutdown process %s via SIGTERM , forcefully exiting via SIGKILL",
                r.handle.pid,
            )
        try:
            r.handle.stop(force=True)
        except PermissionError as exc:
            unkillable[r.rank] = (r, exc)
    killed = [r for r in targets if r.rank not in unkillable]
    wait_ended(killed, time.monotonic() + kill_wait)
    for r in killed:
        if r.status is not None:
            continue
        # Not even SIGKILL ended it (uninterruptible sleep): give up on it rather than wait
        # without bound. It counts as killed by spawnkit.
        logger().error(
            "process %s of rank %s survived a forced stop for %s s; no longer waiting for it",
            r.handle.pid,
            r.rank,
            kill_wait,
        )
        r.status = -int(getattr(signal, "SIGKILL", signal.SIGTERM))
        r.stopped = r.failure is None
    if unkillable:
        raise _unstoppable(list(unkillable.values()))


def _unstoppable(refused: list[tuple[Rank, PermissionError]]) -> StopError:
    """The error for ranks the system would not let this process signal, the first named."""
    r, exc = refused[0]
    code = exc.errno or errno.EPERM
    others = ""
    if len(refused) > 1:
        others = (
            " (and " + ", ".join(f"rank {o.rank}, pid {o.handle.pid}" for o, _ in refused[1:]) + ")"
        )
    uid = f" (uid {os.geteuid()})" if hasattr(os, "geteuid") else ""
    return StopError(
        f"could not stop rank {r.rank}, pid {r.handle.pid}{others}: the system refused both "
        f"SIGTERM and SIGKILL ({errno.errorcode.get(code, code)}: {os.strerror(code)}), so it "
        f"is still running. This process{uid} may not signal it: it runs as another user, "
        "after this process gave up its rights (os.setuid) or the rank gained some (a setuid "
        "program). Keep the job's process able to signal its ranks (drop rights in the ranks, "
        f"not in the job), or stop it as a user who may: kill -KILL -- -{r.handle.pid}",
        r.rank,
        r.handle.pid,
        code,
        tuple(o.rank for o, _ in refused),
    )


def _ranks(n: int) -> str:
    return "1 rank" if n == 1 else f"{n} ranks"
