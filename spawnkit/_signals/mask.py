"""Signal masks and handlers as plain numbers, without ``signal``'s enum conversions.

``signal.pthread_sigmask``, ``valid_signals``, ``sigpending`` and ``getsignal`` wrap
``_signal`` and turn every number of their answer into an enum member, a few microseconds
apiece: blocking every signal and restoring the mask cost 0.25 ms, several times in each
rank's start-up. These are the same calls on ``_signal``, which answers in plain ints.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; signal.py wraps it
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = ["ALL", "block", "getsignal", "pending", "set_mask"]

#: Every valid signal number of this platform.
ALL: frozenset[int] = frozenset(_signal.valid_signals())


def getsignal(signum: int) -> Any:
    """The handler of ``signum``: a callable, ``SIG_DFL``/``SIG_IGN`` as ints, or ``None``."""
    return _signal.getsignal(signum)


if sys.platform != "win32":  # no per-thread masks on Windows

    def block(signals: Iterable[int]) -> set[int]:
        """Add ``signals`` to this thread's mask; the mask as it was."""
        return _signal.pthread_sigmask(_signal.SIG_BLOCK, signals)  # type: ignore[no-any-return]

    def set_mask(signals: Iterable[int]) -> set[int]:
        """Make ``signals`` this thread's mask; the mask as it was."""
        return _signal.pthread_sigmask(_signal.SIG_SETMASK, signals)  # type: ignore[no-any-return]

    def pending() -> set[int]:
        """The signals pending for this thread or the process, blocked meanwhile."""
        return _signal.sigpending()  # type: ignore[no-any-return]
