"""Launch + join time of N no-op workers, per spawnkit backend, next to plain multiprocessing.

Run by hand (never by the tests): ``python benchmarks/launch.py [--repeat 7] [--nprocs 1,4,8]``.
Each backend is compared with the stdlib start method it corresponds to; ``subprocess`` (and
any plugin backend) with ``spawn``, the stdlib's only fresh-interpreter method. Every figure
is the median of ``--repeat`` runs after one warm-up run, spawnkit and stdlib alternating so
that both see the same machine load. ``--importtime`` adds what a worker imports.

Imports stay inside functions: stdlib ``spawn`` workers re-import this script, and a heavy
script would make them look slower than they are.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

STDLIB_METHOD = {"fork": "fork", "forkserver": "forkserver", "spawn": "spawn"}


def noop(rank: int) -> None:
    """The job: nothing at all, so that the figures are the cost of starting and joining."""


def loaded_modules(rank: int) -> list[str]:
    return sorted(sys.modules)


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children, user and system."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _spawnkit_run(backend: str, nprocs: int) -> tuple[float, float]:
    import spawnkit

    cpu, start = _cpu_seconds(), time.perf_counter()
    spawnkit.spawn(noop, nprocs=nprocs, backend=backend)
    return time.perf_counter() - start, _cpu_seconds() - cpu


def _stdlib_run(method: str, nprocs: int) -> tuple[float, float]:
    import multiprocessing

    context = multiprocessing.get_context(method)
    cpu, start = _cpu_seconds(), time.perf_counter()
    processes = [
        context.Process(target=noop, args=(rank,))  # type: ignore[attr-defined]
        for rank in range(nprocs)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    elapsed, used = time.perf_counter() - start, _cpu_seconds() - cpu
    codes = [process.exitcode for process in processes]
    for process in processes:
        process.close()
    if any(codes):
        raise RuntimeError(f"stdlib {method} workers failed: exit codes {codes}")
    return elapsed, used


def _median_ms(samples: list[float]) -> float:
    import statistics

    return statistics.median(samples) * 1000


def _forkserver_start_ms() -> float | None:
    """The first spawnkit forkserver job, fork server start included.

    spawnkit starts the server (one per parent process, shared with the stdlib runs
    below), so that it preloads what spawnkit's workers import, as it does for a user.
    """
    import multiprocessing

    import spawnkit

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    start = time.perf_counter()
    spawnkit.spawn(noop, backend="forkserver")
    return (time.perf_counter() - start) * 1000


def launch_table(backends: list[str], counts: list[int], repeat: int) -> list[dict[str, str]]:
    rows = []
    for backend in backends:
        method = STDLIB_METHOD.get(backend, "spawn")
        for nprocs in counts:
            _spawnkit_run(backend, nprocs)  # warm-up: caches, the resource tracker, ...
            _stdlib_run(method, nprocs)
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            for _ in range(repeat):
                ours.append(_spawnkit_run(backend, nprocs))
                theirs.append(_stdlib_run(method, nprocs))
            wall = _median_ms([w for w, _ in ours]), _median_ms([w for w, _ in theirs])
            cpu = _median_ms([c for _, c in ours]), _median_ms([c for _, c in theirs])
            row = {
                "backend": backend,
                "N": str(nprocs),
                "stdlib": method,
                "spawnkit ms": f"{wall[0]:.1f}",
                "stdlib ms": f"{wall[1]:.1f}",
                "ratio": f"{wall[0] / wall[1]:.2f}",
                "spawnkit cpu ms": f"{cpu[0]:.1f}",
                "stdlib cpu ms": f"{cpu[1]:.1f}",
                "cpu ratio": f"{cpu[0] / cpu[1]:.2f}",
            }
            if method == "forkserver":  # its workers are the server's children, not ours
                row.update({"spawnkit cpu ms": "-", "stdlib cpu ms": "-", "cpu ratio": "-"})
            rows.append(row)
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def _importtime_lines(run: object) -> list[tuple[int, str]]:
    """Run ``run()`` with this process's stderr sent to a file; parse the workers' lines."""
    import re
    import tempfile

    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            run()  # type: ignore[operator]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            found.append((int(match[1]), match[2]))
    return found


def importtime_report(repeat: int) -> list[dict[str, str]]:
    """Self import time, summed over every module and over those beyond ``-c pass``.

    As ``-X importtime`` reports it (``importlib.import_module`` calls are not timed there);
    medians of ``repeat`` runs.
    """
    import multiprocessing
    import statistics
    import subprocess

    import spawnkit

    def python_pass() -> None:
        subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], check=True)

    def subprocess_worker() -> None:
        spawnkit.spawn(abs, backend="subprocess", interpreter_args=["-X", "importtime"])

    def stdlib_spawn() -> None:
        # multiprocessing copies the parent's -X options to its children.
        sys._xoptions["importtime"] = True
        try:
            process = multiprocessing.get_context("spawn").Process(target=abs, args=(0,))
            process.start()
            process.join()
        finally:
            del sys._xoptions["importtime"]

    known = {name for _, name in _importtime_lines(python_pass)}
    rows = []
    for label, run in (
        ("python -X importtime -c pass", python_pass),
        ("backend='subprocess' worker, fn=abs", subprocess_worker),
        ("multiprocessing spawn child, target=abs", stdlib_spawn),
    ):
        totals, extras = [], []
        for _ in range(repeat):
            lines = _importtime_lines(run)
            totals.append(sum(us for us, _ in lines) / 1000)
            extras.append(sum(us for us, name in lines if name not in known) / 1000)
        beyond = [name for _, name in lines if name not in known]
        rows.append(
            {
                "process": label,
                "modules": str(len(lines)),
                "import ms": f"{statistics.median(totals):.1f}",
                "of which beyond -c pass": f"{statistics.median(extras):.1f}",
                "modules beyond -c pass": ", ".join(beyond) if beyond else "-",
            }
        )
    return rows


def _table(rows: list[dict[str, str]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per cell (median)")
    parser.add_argument(
        "--nprocs", default="1,4,8", help="comma-separated worker counts (default 1,4,8)"
    )
    parser.add_argument(
        "--backends", default="", help="comma-separated backends (default: every available one)"
    )
    parser.add_argument(
        "--importtime", action="store_true", help="also report what a worker imports"
    )
    ns = parser.parse_args(argv)
    if ns.repeat < 1:
        parser.error("--repeat must be >= 1")
    try:
        ns.counts = [int(n) for n in ns.nprocs.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--nprocs must be comma-separated integers, not {ns.nprocs!r}")
    if not ns.counts or min(ns.counts) < 1:
        parser.error("--nprocs needs at least one count, each >= 1")
    return ns


def main(argv: list[str] | None = None) -> int:
    import platform

    import spawnkit

    ns = _parse(argv)
    available = spawnkit.available_backends()
    backends = [b.strip() for b in ns.backends.split(",") if b.strip()] or available
    unknown = sorted(set(backends) - set(available))
    if unknown:
        print(f"not available here: {', '.join(unknown)}; available: {', '.join(available)}")
        return 2
    print(
        f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; "
        f"median of {ns.repeat} runs after a warm-up; ratio = spawnkit / stdlib"
    )
    if "forkserver" in backends:
        started = _forkserver_start_ms()
        if started is not None:
            print(
                f"first forkserver job, server start included (not in the table): {started:.1f} ms"
            )
    print(_table(launch_table(backends, ns.counts, ns.repeat)))
    if ns.importtime:
        print()
        print(_table(importtime_report(ns.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
