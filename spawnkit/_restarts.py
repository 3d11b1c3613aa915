"""Restarts of a failed job: which failures restart it, after how long, and what an attempt is.

A job with ``max_restarts=N`` that fails is stopped as any failed job is, then started
again from scratch: a new backend instance, fresh rank environments (the attempt number,
a new ``MASTER_PORT``) and, with ``log_dir``, a folder of logs per attempt. The job's
context (``_context``) runs the attempts; this module holds the policy and its checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import ConfigError, InvalidArgumentError, ProcessException

if TYPE_CHECKING:
    from ._output import OutputPlan
    from ._protocols import Backend

__all__ = [
    "ATTEMPT_VARS",
    "Attempt",
    "DelayOption",
    "NoRestartOption",
    "RestartPolicy",
    "Restarts",
    "attempt_env",
]

#: How many restarts came before this attempt, as torchrun tells it, and spawnkit's name.
RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"
MAX_RESTARTS = "TORCHELASTIC_MAX_RESTARTS"
ATTEMPT = "SPAWNKIT_ATTEMPT"
ATTEMPT_VARS = (RESTART_COUNT, MAX_RESTARTS, ATTEMPT)

DelayOption = float | Callable[[int], float]
NoRestartOption = (
    type[BaseException]
    | tuple[type[BaseException], ...]
    | Callable[[ProcessException], bool]
    | None
)


def attempt_env(attempt: int, max_restarts: int) -> dict[str, str]:
    """The variables that tell a rank which attempt of the job it belongs to."""
    return {
        RESTART_COUNT: str(attempt),
        MAX_RESTARTS: str(max_restarts),
        ATTEMPT: str(attempt),
    }


def _is_types(value: object) -> bool:
    if isinstance(value, type):
        return issubclass(value, BaseException)
    return (
        isinstance(value, tuple)
        and bool(value)
        and all(isinstance(t, type) and issubclass(t, BaseException) for t in value)
    )


@dataclass(frozen=True)
class RestartPolicy:
    """``spawn``'s ``max_restarts``, ``restart_delay`` and ``no_restart_on``, checked."""

    max_restarts: int = 0
    delay: DelayOption = 0.0
    no_restart_on: NoRestartOption = None

    def __post_init__(self) -> None:
        n = self.max_restarts
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidArgumentError(f"max_restarts must be an int >= 0, not {n!r}")
        if n < 0:
            raise ConfigError(
                f"max_restarts must be >= 0, not {n}; 0 runs the job once", "max_restarts"
            )
        if not callable(self.delay):
            _check_delay(self.delay, "restart_delay")
        rule = self.no_restart_on
        if rule is not None and not _is_types(rule) and not callable(rule):
            raise InvalidArgumentError(
                "no_restart_on must be an exception class, a tuple of them, or a callable "
                f"failure -> bool (True: do not restart), not {rule!r:.80}"
            )

    def restartable(self, failure: ProcessException) -> bool:
        """Whether the job may restart after ``failure``, its attempt's root cause.

        Exception classes match the rank's own exception (``failure.exception``) or the
        failure itself (``ProcessExitedException`` matches every exit without an exception).
        """
        rule = self.no_restart_on
        if rule is None:
            return True
        if _is_types(rule):
            types: Any = rule
            own = getattr(failure, "exception", None)
            return not (isinstance(failure, types) or isinstance(own, types))
        assert callable(rule)
        return not rule(failure)

    def delay_before(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (1 for the first)."""
        if not callable(self.delay):
            return float(self.delay)
        seconds = self.delay(restart)
        _check_delay(seconds, f"restart_delay({restart})")
        return float(seconds)


def _check_delay(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(
            f"{what} must be a number of seconds, or a callable restart -> seconds (such as "
            f"lambda n: min(60, 2 ** n) for a backoff), not {value!r:.80}"
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite or value < 0:
        raise ConfigError(f"{what} must be a finite number of seconds >= 0, not {value!r}")


class Attempt(NamedTuple):
    """What one attempt of a job starts with: its own backend, environments and output."""

    backend: Backend
    envs: list[dict[str, str]]
    output: OutputPlan | None


@dataclass(frozen=True)
class Restarts:
    """A job's restart policy, and how to make attempt ``k`` (1, 2...) when it comes."""

    policy: RestartPolicy
    make: Callable[[int], Attempt]
