"""The job's report: how each rank ended, the root cause of a failure, as text and as JSON."""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["JobReport", "RankReport", "signal_meaning", "signal_name"]

# What a rank's death by a signal usually means, as a user reading the report needs it.
_MEANINGS = {
    "SIGKILL": "killed by force: often the out-of-memory killer (see `dmesg`)",
    "SIGSEGV": "a crash in native code: the faulthandler trace is in the rank's stderr",
    "SIGBUS": "a bad memory access in native code (a truncated memory-mapped file?)",
    "SIGABRT": "aborted by native code (abort(), a failed C assertion)",
    "SIGFPE": "an arithmetic fault in native code",
    "SIGILL": "an illegal instruction: a binary built for another CPU?",
    "SIGTERM": "asked to stop by another process",
    "SIGINT": "interrupted (Ctrl-C)",
    "SIGPIPE": "wrote to a pipe whose reader had gone",
    "SIGHUP": "its terminal or session went away",
    "SIGXCPU": "ran past its CPU time limit",
}


def signal_name(signum: int) -> str:
    """``"SIGKILL"``; real-time signals as ``"SIGRTMIN+3"``; else ``"signal 99"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        low, high = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1)
        if low <= signum <= high:
            return f"SIGRTMIN+{signum - low}"
        return f"signal {signum}"


def signal_meaning(name: str) -> str:
    """What death by signal ``name`` usually means; empty when nothing general can be said."""
    return _MEANINGS.get(name, "")


@dataclass(frozen=True)
class RankReport:
    """How one rank ran.

    ``state`` is ``"succeeded"``, ``"failed"``, ``"stopped"`` (by spawnkit: after another
    rank failed, a deadline, ``terminate()`` or a signal to the parent) or ``"running"``.
    ``exit_code`` follows ``multiprocessing``: negative for a signal, whose name is
    ``signal``. ``error`` is the one-line exception of a rank that raised. Times are
    seconds since the epoch; ``logs`` maps ``"stdout"``/``"stderr"`` to the rank's log files.
    """

    rank: int
    state: str
    pid: int | None
    exit_code: int | None
    signal: str | None
    error: str | None
    started: float
    ended: float | None
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, ``None`` while running."""
        return None if self.ended is None else max(0.0, self.ended - self.started)

    def describe(self) -> str:
        """One line: what happened to the rank, in words."""
        if self.state == "running":
            return "still running"
        if self.state == "stopped":
            return "stopped by spawnkit"
        if self.error is not None:
            return f"raised {self.error}"
        if self.signal is not None:
            meaning = signal_meaning(self.signal)
            return f"died from {self.signal}" + (f" ({meaning})" if meaning else "")
        if self.exit_code:
            return f"exited with code {self.exit_code}"
        return "succeeded"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration": self.duration}


@dataclass(frozen=True)
class JobReport:
    """A whole job: its ranks and, when it failed, the root cause.

    ``outcome`` is ``"succeeded"``, ``"failed"``, ``"timed out"``, ``"stopped"`` or
    ``"running"``. ``failed`` lists the ranks that failed on their own, earliest first;
    ``root_cause`` is the first of them. ``unshown`` counts the lines of the ranks' output
    that a stalled console (a pipe nobody reads) did not take in time, so were not shown.
    :meth:`format` is the summary block spawnkit shows when a job fails; :meth:`as_dict` the
    same for machines (``spawnkit run --json``).

    A job started with ``max_restarts`` runs in attempts: ``ranks``, ``failed`` and
    ``outcome`` are the current (or last) attempt's, number ``attempt`` (0 for the first);
    ``attempts`` holds the report of every earlier attempt, each of which failed and was
    restarted. ``started`` is when the whole job started.
    """

    backend: str
    outcome: str
    ranks: tuple[RankReport, ...]
    failed: tuple[int, ...]
    started: float
    ended: float | None
    timeout: float | None = None
    unshown: int = 0
    attempt: int = 0
    attempts: tuple[JobReport, ...] = ()

    @property
    def root_cause(self) -> RankReport | None:
        return self.ranks[self.failed[0]] if self.failed else None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)

    def format(self) -> str:
        """The summary block: the root cause, every other failure, the ranks stopped."""
        n = len(self.ranks)
        took = "" if self.duration is None else f", {self.duration:.2f} s"
        if self.outcome == "failed":
            head = f"{len(self.failed)} of {n} ranks failed"
        elif self.outcome == "timed out":
            still = [r for r in self.ranks if r.state == "stopped"]
            head = f"deadline of {self.timeout:g} s passed with {len(still)} of {n} ranks running"
        else:
            head = f"{n} ranks {self.outcome}"
        which = f", attempt {self.attempt}" if self.attempt else ""
        lines = [f"== spawnkit job: {head} (backend {self.backend!r}{took}{which}) =="]
        root = self.root_cause
        if root is not None:
            lines += ["root cause:", *_rank_lines(root)]
            others = [self.ranks[i] for i in self.failed[1:]]
            if others:
                lines.append("also failed:")
                for other in others:
                    lines += _rank_lines(other)
        stopped = [r for r in self.ranks if r.state == "stopped"]
        if stopped:
            what = (
                "still running at the deadline, stopped"
                if self.outcome == "timed out"
                else ("stopped by spawnkit")
            )
            lines.append(f"{what}: " + ", ".join(_who(r) for r in stopped))
        if self.unshown:
            logs = "; the rank logs have them" if any(r.logs for r in self.ranks) else ""
            lines.append(
                f"not shown: {self.unshown} lines of the ranks' output, which the console "
                f"(a pipe nobody reads?) did not take in time{logs}"
            )
        if self.attempts:
            lines.append("earlier attempts, each failed and restarted:")
            for earlier in self.attempts:
                lines += _attempt_lines(earlier)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        root = self.root_cause
        return {
            "backend": self.backend,
            "outcome": self.outcome,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "timeout": self.timeout,
            "unshown": self.unshown,
            "root_cause": None if root is None else root.rank,
            "failed": list(self.failed),
            "ranks": [r.as_dict() for r in self.ranks],
            "attempt": self.attempt,
            "attempts": [a.as_dict() for a in self.attempts],
        }


def _who(r: RankReport) -> str:
    pid = "" if r.pid is None else f" (pid {r.pid})"
    took = "" if r.duration is None else f" after {r.duration:.2f} s"
    return f"rank {r.rank}{pid}{took}"


def _attempt_lines(report: JobReport) -> list[str]:
    """One earlier attempt: when it ran, and the rank that failed first and why."""
    when = time.strftime("%H:%M:%S", time.localtime(report.started))
    took = "" if report.duration is None else f", {report.duration:.2f} s"
    root = report.root_cause
    what = "no rank failed" if root is None else f"{_who(root)}: {root.describe()}"
    others = len(report.failed) - 1
    also = f" (and {others} more failed)" if others > 0 else ""
    lines = [f"  attempt {report.attempt} (started {when}{took}): {what}{also}"]
    if root is not None:
        lines += [f"    {stream} log: {path}" for stream, path in sorted(root.logs.items())]
    return lines


def _rank_lines(r: RankReport) -> list[str]:
    lines = [f"  {_who(r)}: {r.describe()}"]
    lines += [f"    {stream} log: {path}" for stream, path in sorted(r.logs.items())]
    return lines
