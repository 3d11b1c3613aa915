"""Every test in this suite fails if it leaves a process behind; the torch folders run only
when named; ``--shard=I/N`` runs one of N shards (tools/shards runs them all at once)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

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


# Importing torch changes spawnkit in the whole test process: its stop messages go to torch's
# logger, its failures become torch's exception classes too. The rest of the suite tests
# spawnkit as a program without torch sees it, so a plain ``pytest`` leaves these folders out
# even where torch is installed; ``pytest tests/torch_tensors`` (tox -e torch) runs them.
TESTS = Path(__file__).resolve().parent
TORCH_FOLDERS = (TESTS / "torch_tensors", TESTS / "torch_ecosystem")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    folder = next(
        (f for f in TORCH_FOLDERS if f == collection_path or f in collection_path.parents), None
    )
    if folder is None:
        return None
    base = config.invocation_params.dir
    for arg in config.args:
        named = (base / arg.split("::")[0]).resolve()
        if named == folder or folder in named.parents:
            return None
    return True


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shard",
        metavar="I/N",
        help="run every Nth of the selected tests, from the Ith (0 to N-1): one of N sessions "
        "that run the suite at once (tools/shards)",
    )


@pytest.hookimpl(trylast=True)  # after -k and -m: the shards share out what they selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("shard")
    if shard is None:
        return
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise pytest.UsageError(f"--shard takes I/N with 0 <= I < N, not {shard!r}")
    # Every Nth, not a block of N: neighbours are alike (one check on each backend), so
    # each shard gets a like share of the slow ones.
    mine = items[int(index) :: int(count)]
    kept = set(mine)
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = mine
