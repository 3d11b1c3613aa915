"""Built-in parent watches, one mechanism a module; each child half imports only the stdlib."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def start_thread(wait: Callable[[], None]) -> None:
    """Run a watch's blocking ``wait`` in a thread that does not keep the worker alive.

    A bare ``_thread`` rather than ``threading.Thread``: ``start()`` waits until the new
    thread has run, which costs a worker milliseconds of start-up when the GIL is busy.
    """
    import _thread

    _thread.start_new_thread(wait, ())
