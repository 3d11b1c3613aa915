"""The job's half of a watch that needs nothing from the job but the pids the spec records."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._protocols import ChildWatch


class PassiveParent:
    """Hands every rank the same child half; opens nothing, forwards nothing."""

    def __init__(self, child: ChildWatch) -> None:
        self._child = child

    def child_watch(self) -> ChildWatch:
        return self._child

    def fds(self) -> tuple[int, ...]:
        return ()

    def private_fds(self) -> tuple[int, ...]:
        return ()

    def close(self) -> None:
        pass
