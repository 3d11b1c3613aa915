"""``none``: no parent watch; workers may outlive a parent that dies without cleaning up."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._spec import WorkerSpec


class NoWatch:
    """The worker's side: nothing to arm."""

    name = "none"

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        pass
