"""Every test in this suite fails if it leaves a process behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from spawnkit.testing import leak_guard


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    with leak_guard():
        yield
