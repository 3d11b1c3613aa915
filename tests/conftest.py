"""Every test in this suite fails if it leaves a process behind."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from spawnkit.testing import leak_guard

# A shell that starts the suite in the background (`tox &` in a script) makes it ignore
# SIGINT, and every process it starts would inherit that: the Ctrl-C tests would test the
# launcher, not spawnkit. The suite runs with Python's usual SIGINT handling instead; the
# ignored case has its own test (test_an_ignored_signal_stays_ignored).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    with leak_guard():
        yield
