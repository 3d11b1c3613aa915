"""Launch + join time of N no-op ranks, per spawnkit backend, next to the stdlib and peers.

Run by hand (never by the tests), on pyperf (``pyperf system tune`` first where you can)::

    python benchmarks/launch.py [--fast|--rigorous] [--nprocs 1,4,16] [--backends fork,spawn]
                                [--torch] [--peers] [--importtime [REPEAT]] [-o launch.json]

One pyperf benchmark per launcher and N (``spawnkit fork N=4``, ``stdlib fork N=4``, ``bare
os.fork N=4``, ``torch start_processes fork N=4``, ``loky ...``), all in one Runner: pyperf
measures each in fresh worker processes (20, ``--fast`` 10, ``--rigorous`` 40) after a
warm-up value, and the launchers of one N follow each other, so a ratio's two sides are
measured minutes apart at most. At the end the main process prints the ratios. Each
backend is compared with the stdlib start method it builds on (``subprocess`` with
``spawn``) and with the floor: N bare ``os.fork()`` + ``os._exit(0)`` + ``waitpid``.
``-o`` keeps every value for ``python -m pyperf stats/hist``, and ``python -m pyperf
compare_to before.json after.json`` compares two runs (a change to spawnkit) benchmark by
benchmark.

Imports stay inside functions: stdlib ``spawn`` ranks re-import this script.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Callable

JOB_TIMEOUT = 120.0  # seconds: no-op ranks end in well under a second; a hung launch fails
STDLIB_METHOD = {
    "fork": "fork",
    "forkserver": "forkserver",
    "spawn": "spawn",
    "subprocess": "spawn",
}
FLOOR = "bare os.fork"


def noop(rank: int) -> None:
    """The job: nothing at all, so that the figures are the cost of starting and joining."""


def _bare_fork(n: int) -> None:
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)


def _stdlib(method: str) -> Callable[[int], None]:
    import multiprocessing

    context = multiprocessing.get_context(method)

    def launch(n: int) -> None:
        processes = [context.Process(target=noop, args=(r,)) for r in range(n)]  # type: ignore[attr-defined]
        for process in processes:
            process.start()
        for process in processes:
            process.join(JOB_TIMEOUT)
        codes = [process.exitcode for process in processes]
        for process in processes:
            if process.exitcode is None:
                process.kill()
                process.join()
        if any(codes):
            raise RuntimeError(f"stdlib {method} ranks failed: exit codes {codes}")

    return launch


def _spawnkit(backend: str) -> Callable[[int], None]:
    import spawnkit

    def launch(n: int) -> None:
        spawnkit.spawn(noop, nprocs=n, backend=backend, timeout=JOB_TIMEOUT)

    return launch


def _torch(method: str) -> Callable[[int], None]:
    import torch.multiprocessing

    def launch(n: int) -> None:
        torch.multiprocessing.start_processes(noop, nprocs=n, start_method=method)

    return launch


def _loky_executor(n: int) -> None:
    import loky

    executor = loky.ProcessPoolExecutor(max_workers=n)
    try:
        for future in [executor.submit(noop, r) for r in range(n)]:
            future.result(timeout=JOB_TIMEOUT)
    finally:
        executor.shutdown(wait=True)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def launchers(backend: str, peers: bool) -> list[tuple[str, Callable[[int], None]]]:
    """Who is measured next to spawnkit's ``backend``, spawnkit first."""
    method = STDLIB_METHOD[backend]
    found = [(f"spawnkit {backend}", _spawnkit(backend)), (f"stdlib {method}", _stdlib(method))]
    if peers and _have("torch") and backend in ("fork", "forkserver", "spawn"):
        found.append((f"torch start_processes {method}", _torch(method)))
    if peers and _have("loky") and backend in ("spawn", "subprocess"):
        found.append(("loky ProcessPoolExecutor", _loky_executor))
    return found


def _timed(loops: int, launch: Callable[[int], None], n: int) -> float:
    """pyperf's time function: ``loops`` launches + joins of ``n`` ranks, in seconds."""
    start = time.perf_counter()
    for _ in range(loops):
        launch(n)
    return time.perf_counter() - start


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
    columns = list(dict.fromkeys(column for row in rows for column in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(
        lines + ["| " + " | ".join(r.get(c, "-") for c in columns) + " |" for r in rows]
    )


def ratio_rows(
    medians: dict[str, float], backends: list[str], counts: list[int]
) -> list[dict[str, str]]:
    """spawnkit / each other launcher of its row, from the benchmarks' medians."""
    rows = []
    for backend in backends:
        for n in counts:
            ours = medians[f"spawnkit {backend} N={n}"]
            row = {"backend": backend, "N": str(n), "spawnkit ms": f"{ours * 1000:.1f}"}
            for other in [name for name, _ in launchers(backend, peers=True)[1:]] + [FLOOR]:
                theirs = medians.get(f"{other} N={n}")
                if theirs:
                    row[f"/ {other}"] = f"{ours / theirs:.2f}"
            rows.append(row)
    return rows


def _worker_args(cmd: list[str], args: argparse.Namespace) -> None:
    """What pyperf's worker processes need of our own options."""
    cmd += ["--nprocs", args.nprocs, "--backends", args.backends]
    cmd += ["--torch"] if args.torch else []
    cmd += ["--peers"] if args.peers else []


def main() -> int:
    import pyperf

    runner = pyperf.Runner(add_cmdline_args=_worker_args)
    parser = runner.argparser
    parser.add_argument("--nprocs", default="1,4,16", help="comma-separated rank counts")
    parser.add_argument("--backends", default="fork,forkserver,spawn,subprocess")
    parser.add_argument("--torch", action="store_true", help="import torch in the parent first")
    parser.add_argument("--peers", action="store_true", help="also torch and loky, if installed")
    parser.add_argument(
        "--importtime", type=int, nargs="?", const=5, metavar="REPEAT",
        help="also what a fresh rank imports (median of REPEAT runs, default 5)",
    )  # fmt: skip
    args = runner.parse_args()
    counts = [int(n) for n in args.nprocs.split(",") if n.strip()]
    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - set(STDLIB_METHOD))
    if unknown or not counts or min(counts) < 1:
        parser.error(f"--nprocs: counts >= 1; --backends: from {', '.join(STDLIB_METHOD)}")
    if args.torch:
        import torch  # noqa: F401  a big parent, as a torch user's: every fork copies more

    medians: dict[str, float] = {}
    for n in counts:
        measured = {FLOOR: _bare_fork}
        for backend in backends:
            measured.update(launchers(backend, args.peers))
        for name, launch in measured.items():
            bench = runner.bench_time_func(f"{name} N={n}", _timed, launch, n)
            if bench is not None:  # the main process; a worker measures and returns None
                medians[f"{name} N={n}"] = bench.median()
    if args.worker:
        return 0
    print()
    print(
        f"spawnkit / each launcher (medians; torch in the parent: {'yes' if args.torch else 'no'})"
    )
    print(_table(ratio_rows(medians, backends, counts)))
    if args.importtime:
        print()
        print(_table(importtime_report(args.importtime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
