"""Where a rank's start-up time goes: launch + join of N no-op ranks, split into stages.

Run by hand (never by the tests), on a quiet machine::

    python benchmarks/breakdown.py [--repeat 9] [--nprocs 1,4,16] [--backends fork,spawn]
                                   [--torch]

Every launcher runs the same ``fn`` (``_stamp.stamp``), which writes down when its rank was
created, when the new process first ran Python, and when ``fn`` began and returned. With the
parent's times just before the launch and just after the join, each rank's time splits into
stages that add up to the whole launch + join (see README.md for each column). Rows: each
spawnkit backend, the stdlib start method it builds on, and the floor, N bare ``os.fork()`` +
``os._exit(0)`` + ``waitpid``; all of them take turns in every round, so they see the same load.

Imports stay inside functions: stdlib ``spawn`` ranks re-import this script.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    Launch = Callable[..., None]

BACKENDS = ("fork", "forkserver", "spawn", "subprocess")
STAGES = ("parent", "create", "boot", "fn", "exit")
# What each rank used up to fn, by getrusage(): CPU seconds, minor page faults, sleeps.
USAGE = ("cpu", "faults", "waits")
SITECUSTOMIZE = "import time\n\nSTARTED = time.monotonic()  # an exec'd rank's first Python\n"


def _stamp_exec_creation() -> None:
    """Have every fork_exec (multiprocessing spawn, subprocess.Popen) pass the time it began.

    The time goes into the new process's environment, where ``_stamp`` finds it: an exec'd
    rank cannot inherit a variable of ours, and nothing runs in the parent at its creation.
    """
    import _posixsubprocess
    import subprocess

    from _stamp import CREATED_ENV

    original = _posixsubprocess.fork_exec

    def fork_exec(*args: object) -> int:
        created = repr(time.monotonic())
        env = args[5]  # the environment, as b"NAME=value" items; None: os.environ's
        if env is not None:
            return original(*args[:5], [*env, f"{CREATED_ENV}={created}".encode()], *args[6:])  # type: ignore[no-any-return, misc]
        os.environ[CREATED_ENV] = created
        try:
            return original(*args)  # type: ignore[no-any-return]
        finally:
            del os.environ[CREATED_ENV]

    _posixsubprocess.fork_exec = fork_exec
    if hasattr(subprocess, "_fork_exec"):  # Python 3.11+ keeps its own reference
        subprocess._fork_exec = fork_exec


def _launchers(backends: list[str]) -> list[tuple[str, Launch]]:
    from launch import FLOOR, STDLIB_METHOD, bare_fork, spawnkit_launcher, stdlib_launcher

    found = [(FLOOR, bare_fork)]
    for method in dict.fromkeys(STDLIB_METHOD[b] for b in backends):
        found.append((f"stdlib {method}", stdlib_launcher(method)))
    for backend in backends:
        # A fork server must import _stamp, so that its at-fork hooks stamp the ranks.
        options = {"preload": ["_stamp"]} if backend == "forkserver" else {}
        found.append((f"spawnkit {backend}", spawnkit_launcher(backend, **options)))
    return found


def _job(launch: Launch, n: int, folder: str) -> tuple[float, list[tuple[float, ...]]]:
    """One launch + join: its total, and each rank's stages (seconds) followed by its USAGE
    (NaN where unknown)."""
    import struct
    from itertools import pairwise

    from _stamp import NAN, RECORD, stamp

    path = os.path.join(folder, "stamps")
    with open(path, "wb") as file:
        file.write(struct.pack(f"{RECORD * n}d", *[NAN] * (RECORD * n)))
    called = time.monotonic()
    launch(n, stamp, (path,))
    joined = time.monotonic()
    with open(path, "rb") as file:
        values = struct.unpack(f"{RECORD * n}d", file.read())
    ranks = []
    for rank in range(n):
        created, born, entered, returned, *usage = values[rank * RECORD : (rank + 1) * RECORD]
        points = (called, created, born, entered, returned, joined)
        ranks.append((*(b - a for a, b in pairwise(points)), *usage))
    return joined - called, ranks


def _median(values: list[float]) -> float:
    import math
    import statistics

    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if len(known) == len(values) else math.nan


def _shown(value: float, scale: float = 1000.0, digits: int = 2) -> str:
    """``value`` in a table cell (seconds as ms by default); ``-`` where it is unknown."""
    import math

    return "-" if math.isnan(value) else f"{value * scale:.{digits}f}"


def run(backends: list[str], counts: list[int], repeat: int) -> list[dict[str, str]]:
    import tempfile

    launchers = _launchers(backends)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spawnkit-bench-") as folder:
        for n in counts:
            totals: dict[str, list[float]] = {name: [] for name, _ in launchers}
            stages: dict[str, list[tuple[float, ...]]] = {name: [] for name, _ in launchers}
            tails: dict[str, list[float]] = {name: [] for name, _ in launchers}
            for round_ in range(1 + repeat):  # round 0 warms up: servers, caches, trackers
                for name, launch in launchers:
                    total, ranks = _job(launch, n, folder)
                    if round_:
                        totals[name].append(total)
                        stages[name] += ranks
                        tails[name].append(min(rank[len(STAGES) - 1] for rank in ranks))
                print(".", end="", file=sys.stderr, flush=True)
            floor = _median(totals[launchers[0][0]])
            for name, _ in launchers:
                total = _median(totals[name])
                row = {"launcher": name, "N": str(n), "total ms": _shown(total)}
                row["/ floor"] = f"{total / floor:.2f}"
                for index, stage in enumerate(STAGES):
                    row[f"{stage} ms"] = _shown(_median([rank[index] for rank in stages[name]]))
                row["last exit ms"] = _shown(_median(tails[name]))
                cpu, faults, waits = (
                    _median([rank[len(STAGES) + i] for rank in stages[name]])
                    for i in range(len(USAGE))
                )
                row["rank cpu ms"] = _shown(cpu)
                row["faults"] = _shown(faults, 1, 0)
                row["waits"] = _shown(waits, 1, 0)
                rows.append(row)
    print(file=sys.stderr)
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="rounds after the warm-up")
    parser.add_argument("--nprocs", default="1,4,16", help="comma-separated rank counts")
    parser.add_argument("--backends", default="", help="default: fork,forkserver,spawn,subprocess")
    parser.add_argument("--torch", action="store_true", help="import torch in the parent first")
    ns = parser.parse_args(argv)
    ns.counts = [int(n) for n in ns.nprocs.split(",") if n.strip()]
    ns.backends = [b for b in ns.backends.split(",") if b] or list(BACKENDS)
    if ns.repeat < 1 or not ns.counts or min(ns.counts) < 1:
        parser.error("--repeat and every --nprocs count must be >= 1")
    unknown = sorted(set(ns.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    return ns


def main(argv: list[str] | None = None) -> int:
    import multiprocessing
    import platform
    import tempfile

    ns = _parse(argv)
    if ns.torch:
        import torch  # noqa: F401  a big parent, as a torch user's: every fork copies more

    import spawnkit

    import _stamp  # noqa: F401  registers the at-fork hooks in this process, which forks

    # Exec'd ranks run this first: their "born" time. Outside the checkout: nothing else
    # may find it, and PYTHONPATH reaches every interpreter the launchers start. This folder
    # goes there too: Python 3.11's stdlib fork server does not take the parent's sys.path,
    # and it must import _stamp.
    site = tempfile.mkdtemp(prefix="spawnkit-bench-site-")
    with open(os.path.join(site, "sitecustomize.py"), "w") as file:
        file.write(SITECUSTOMIZE)
    here = os.path.dirname(os.path.abspath(__file__))
    path = [site, here, os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    _stamp_exec_creation()
    multiprocessing.set_forkserver_preload(["__main__", "_stamp"])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs,")
    print(f"load {load}; spawnkit {spawnkit.__version__} ({os.path.dirname(spawnkit.__file__)})")
    print(f"torch in the parent: {'yes' if ns.torch else 'no'}; medians of {ns.repeat} rounds")
    print()
    try:
        rows = run(ns.backends, ns.counts, ns.repeat)
    finally:
        import shutil

        shutil.rmtree(site, ignore_errors=True)
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
