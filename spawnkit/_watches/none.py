"""``none``: no parent watch; workers may outlive a parent that dies without cleaning up."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec


class NoWatch:
    """Parent and child half at once: there is nothing to prepare and nothing to arm."""

    name = "none"

    def child_watch(self) -> NoWatch:
        return self

    def fds(self) -> tuple[int, ...]:
        return ()

    def private_fds(self) -> tuple[int, ...]:
        return ()

    def close(self) -> None:
        pass

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        pass
