"""Launch + join time of N no-op ranks, per spawnkit backend, next to the stdlib and peers.

Run by hand (never by the tests), on pyperf (``pyperf system tune`` first where you can)::

    python benchmarks/launch.py [--fast|--rigorous] [--nprocs 1,4,16] [--backends fork,spawn]
                                [--torch] [--peers] [--arg-mb 100] [--importtime [REPEAT]]
                                [-o launch.json]

One pyperf benchmark per launcher and N (``spawnkit fork N=4``, ``stdlib fork N=4``, ``bare
os.fork N=4``, ``torch start_processes fork N=4``, ``loky ...``), all in one Runner: pyperf
measures each in fresh worker processes (20, ``--fast`` 10, ``--rigorous`` 40) after a
warm-up value, and the launchers of one N follow each other, so a ratio's two sides are
measured minutes apart at most. At the end the main process prints the ratios. Each
backend is compared with the stdlib start method it builds on (``subprocess`` with
``spawn``) and with the floor: N bare ``os.fork()`` + ``os._exit(0)`` + ``waitpid``.
``--arg-mb 100`` gives every rank a 100 MB ``bytes`` argument (fork-based launchers hand it
over by inheritance, the others pickle it per rank); each rank checks its length.
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
    from collections.abc import Callable

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


def bare_fork(n: int, fn: Callable[..., None] = noop, args: tuple[object, ...] = ()) -> None:
    """The floor: N ``os.fork()`` running ``fn(rank, *args)``, ``os._exit``, ``waitpid``."""
    pids = []
    for rank in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn(rank, *args)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    if any(codes):
        raise RuntimeError(f"bare fork ranks failed: exit codes {codes}")


def stdlib_launcher(method: str) -> Callable[..., None]:
    """``Process.start()`` + ``join()`` of N ranks of a ``multiprocessing`` start method."""
    import multiprocessing

    context = multiprocessing.get_context(method)

    def launch(n: int, fn: Callable[..., None] = noop, args: tuple[object, ...] = ()) -> None:
        processes = [context.Process(target=fn, args=(r, *args)) for r in range(n)]  # type: ignore[attr-defined]
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


def spawnkit_launcher(backend: str, **options: object) -> Callable[..., None]:
    import spawnkit

    def launch(n: int, fn: Callable[..., None] = noop, args: tuple[object, ...] = ()) -> None:
        spawnkit.spawn(fn, args=args, nprocs=n, backend=backend, timeout=JOB_TIMEOUT, **options)

    return launch


def _torch(method: str) -> Callable[..., None]:
    import torch.multiprocessing

    def launch(n: int, fn: Callable[..., None] = noop, args: tuple[object, ...] = ()) -> None:
        torch.multiprocessing.start_processes(fn, args=args, nprocs=n, start_method=method)

    return launch


def _loky_executor(n: int, fn: Callable[..., None] = noop, args: tuple[object, ...] = ()) -> None:
    import loky

    executor = loky.ProcessPoolExecutor(max_workers=n)
    try:
        for future in [executor.submit(fn, r, *args) for r in range(n)]:
            future.result(timeout=JOB_TIMEOUT)
    finally:
        executor.shutdown(wait=True)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def launchers(backend: str, peers: bool) -> list[tuple[str, Callable[..., None]]]:
    """Who is measured next to spawnkit's ``backend``, spawnkit first."""
    method = STDLIB_METHOD[backend]
    found = [
        (f"spawnkit {backend}", spawnkit_launcher(backend)),
        (f"stdlib {method}", stdlib_launcher(method)),
    ]
    if peers and _have("torch") and backend in ("fork", "forkserver", "spawn"):
        found.append((f"torch start_processes {method}", _torch(method)))
    if peers and _have("loky") and backend in ("spawn", "subprocess"):
        found.append(("loky ProcessPoolExecutor", _loky_executor))
    return found


def check_length(rank: int, blob: bytes, expected: int) -> None:
    """The job of ``--arg-mb``: a rank that got a wrong argument exits non-zero."""
    if len(blob) != expected:
        sys.exit(3)


def _timed(loops: int, launch: Callable[..., None], n: int, args: tuple[object, ...]) -> float:
    """pyperf's time function: ``loops`` launches + joins of ``n`` ranks, in seconds."""
    fn = check_length if args else noop
    start = time.perf_counter()
    for _ in range(loops):
        launch(n, fn, args)
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
    cmd += ["--nprocs", args.nprocs, "--backends", args.backends, "--arg-mb", str(args.arg_mb)]
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
    parser.add_argument("--arg-mb", type=int, default=0, help="a bytes argument to every rank")
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

    blob = os.urandom(1000) * (1000 * args.arg_mb)
    job_args = (blob, len(blob)) if args.arg_mb else ()
    suffix = f" arg={args.arg_mb}MB" if args.arg_mb else ""
    medians: dict[str, float] = {}
    for n in counts:
        measured = {FLOOR: bare_fork}
        for backend in backends:
            measured.update(launchers(backend, args.peers))
        for name, launch in measured.items():
            bench = runner.bench_time_func(f"{name} N={n}{suffix}", _timed, launch, n, job_args)
            if not runner.args.worker and bench is not None:  # None: not this worker's task
                medians[f"{name} N={n}"] = bench.median()  # the ratios' keys have no suffix
    if args.worker:
        return 0
    print()
    big = "yes" if args.torch else "no"
    print(f"spawnkit / each launcher (medians; torch in the parent: {big}){suffix}")
    print(_table(ratio_rows(medians, backends, counts)))
    if args.importtime:
        print()
        print(_table(importtime_report(args.importtime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
