"""The protocols type-check a plugin under ``mypy --strict`` without subclassing anything."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "mypy",
    reason="mypy is not installed in this interpreter; pip install 'spawnkit[testing]' brings it",
)

SAMPLES = Path(__file__).parent / "typing_samples"
FIXTURE_PLUGIN = Path(__file__).parent / "plugin_fixture" / "spawnkit_shellwrap"
# What a plugin author's mypy configuration would say: strict, nothing else.
CONFIG = "[mypy]\nstrict = True\nwarn_unreachable = True\n"
ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*?)  \[[a-z-]+\]$")


def mypy(tmp_path: Path, *targets: Path) -> subprocess.CompletedProcess[str]:
    # Outside the repository, so only the installed spawnkit (and its py.typed) is seen.
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), *map(str, targets)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )


def expected_errors(sample: Path) -> set[tuple[int, str]]:
    """``(line, message)`` for each ``# E: message`` comment, which names the next line."""
    found = set()
    for number, line in enumerate(sample.read_text().splitlines(), start=1):
        marker = line.strip()
        if marker.startswith("# E: "):
            found.add((number + 1, marker[len("# E: ") :].split("  # noqa")[0]))
    return found


def test_a_plugin_that_follows_the_protocols_passes_mypy_strict(tmp_path: Path) -> None:
    result = mypy(tmp_path, SAMPLES / "good_plugin.py", FIXTURE_PLUGIN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found in ")


def test_a_plugin_that_breaks_the_protocols_fails_with_the_expected_errors(
    tmp_path: Path,
) -> None:
    sample = SAMPLES / "bad_plugin.py"
    result = mypy(tmp_path, sample)
    assert result.returncode == 1, result.stdout + result.stderr
    reported = {
        (int(m["line"]), m["message"])
        for m in map(ERROR.match, result.stdout.splitlines())
        if m is not None
    }
    expected = expected_errors(sample)
    assert len(expected) == 3
    assert reported == expected, result.stdout
    # The notes are what tell an author the signature the protocol wants.
    assert (
        "def start(self, spec: WorkerSpec, notify: Callable[[], None]) -> WorkerHandle"
        in result.stdout
    )
    assert "def poll(self) -> Outcome | None\n" in result.stdout
    assert '"BadHandle" is missing following "WorkerHandle" protocol member' in result.stdout
