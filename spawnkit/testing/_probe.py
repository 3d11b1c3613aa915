"""A first look at a backend before the kit's checks run: does a tiny job finish at all?

A backend whose ``poll()`` or ``start()`` blocks would make every check wait out its timeout
(hours for the whole kit) and say only that it timed out. The probe runs a two-rank job in
a process of its own, once per backend and session, with faulthandler on; if the job has
not finished within :data:`PROBE_SECONDS`, it asks that process where it is stuck and every
check of the backend fails at once with that answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from ._hang import describe_hang

__all__ = ["PROBE_SECONDS", "probe", "run_probe"]

PROBE_SECONDS = 60.0

_CODE = """
import spawnkit
from spawnkit.testing import _targets as t
if __name__ == "__main__":
    got = spawnkit.spawn(t.times, args=(2,), nprocs=2, backend={backend!r}, **{options!r})
    assert got == [0, 2], got
"""

_found: dict[tuple[str, str], str | None] = {}


def probe(backend: str, options: Mapping[str, Any] | None = None) -> str | None:
    """Why ``backend`` cannot run a tiny job (where it hung, how it failed), else ``None``;
    ``options`` go to the backend, as ``BackendSuite.backend_options`` does."""
    key = (backend, repr(dict(options or {})))
    if key not in _found:
        _found[key] = run_probe(backend, options=options)
    return _found[key]


def run_probe(
    backend: str, seconds: float = PROBE_SECONDS, options: Mapping[str, Any] | None = None
) -> str | None:
    """:func:`probe` itself, uncached, bounded by ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="spawnkit-probe-") as tmp:
        script = os.path.join(tmp, "probe.py")
        with open(script, "w") as f:
            f.write(_CODE.format(backend=backend, options=dict(options or {})))
        err_path = os.path.join(tmp, "stderr")
        with open(err_path, "wb") as err:
            # A session of its own: whatever the probe leaves goes with its group below.
            process = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", script],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            try:
                status = process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                status = None
                process.send_signal(signal.SIGABRT)  # faulthandler prints every thread
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            finally:
                _kill_group(process)
        with open(err_path, errors="replace") as f:
            text = f.read()
    if status is None:
        return (
            f"backend {backend!r} did not finish a two-rank job of no work within "
            f"{seconds:g} s; it was stuck in {describe_hang(text)}. Every method of "
            "a backend and its handles must return promptly (poll() never blocks)"
        )
    if status != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        return f"backend {backend!r} failed a two-rank job of no work (exit {status}):\n{tail}"
    return None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if sys.platform == "win32":
        process.kill()
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
    process.wait()
