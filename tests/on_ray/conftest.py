"""The Ray tests run only where Ray's traffic cannot leave loopback (``tests/on_ray/run.sh``)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

NAMESPACE_ENV = "SPAWNKIT_RAY_NAMESPACE"


def _only_loopback() -> bool:
    # /proc/net speaks of the reading process's own network namespace (/sys may not).
    try:
        with open("/proc/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def _why_not() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (tox -e ray installs it)"
    if os.environ.get(NAMESPACE_ENV) != "1" or not _only_loopback():
        return (
            "the Ray tests run only in a network namespace with loopback alone: "
            "tests/on_ray/run.sh (tox -e ray) makes one"
        )
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = _why_not()
    if why is None:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session", autouse=True)
def _connected() -> Iterator[None]:
    """One connection to the shared head for the whole run, as a program that called
    ``ray.init()`` itself has: the backend keeps it, and jobs start in a fraction of a second."""
    if _why_not() is not None:
        yield
        return
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    yield
    ray.shutdown()
