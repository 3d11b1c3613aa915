"""Parent death to all workers gone: latency per parent watch, per backend.

Run by hand (never by the tests)::

    python benchmarks/parent_death.py [--repeat 9] [--nprocs 2] [--backends spawn,forkserver]
                                      [--watches pidfd,prctl,pipe,poll] [--children 1]

Each run is the harness of the parent-death tests (``spawnkit.testing._death_harness``):
a job of ``--nprocs`` blocked workers (and ``--children`` grandchildren each) is started
by a parent process in its own session; once every worker reports its watch armed, the
parent is SIGKILLed, and the time from the kill to the exit of the last worker and
grandchild is read from pidfds opened beforehand (Linux; elsewhere from polling). Figures
are medians over ``--repeat`` runs. The stdlib has no parent watch to compare with:
``multiprocessing`` workers of a SIGKILLed parent run on, which is what the ``none`` row
shows (``orphaned``). ``poll`` is expected near half its interval
(``SPAWNKIT_POLL_INTERVAL``, default 0.1 s) plus the rest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile


def _measure(backend: str, watch: str, nprocs: int, children: int) -> float | str:
    from spawnkit.testing._death_harness import run_harness

    survive = ["job"] if watch == "none" else []
    job = {"backend": backend, "watch": watch, "nprocs": nprocs, "tag": "job"}
    with tempfile.TemporaryDirectory() as folder:
        result = run_harness(folder, [job], children=children, survive=survive)
    if result["error"]:
        raise RuntimeError(f"{backend}/{watch}: {result['error']}\n{result['output']}")
    if watch == "none":
        return "orphaned" if result.get("alive") else "gone?"
    if result["remaining"]:
        raise RuntimeError(f"{backend}/{watch}: {result['remaining']} outlived the parent")
    elapsed: float = result["elapsed"]
    return elapsed


def main(argv: list[str] | None = None) -> int:
    import spawnkit

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--children", type=int, default=0)
    parser.add_argument("--backends", default="spawn,forkserver")
    parser.add_argument("--watches", default=",".join(spawnkit.available_watches()))
    args = parser.parse_args(argv)

    print(f"# {sys.platform}, Python {sys.version.split()[0]}, auto = ", end="")
    from spawnkit._registry import plugins

    print(plugins().watch("auto").name)
    print(f"# nprocs={args.nprocs} children={args.children} repeat={args.repeat}")
    print(f"{'backend':<12}{'watch':<8}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
    for backend in args.backends.split(","):
        for watch in args.watches.split(","):
            _measure(backend, watch, args.nprocs, args.children)  # warm-up
            runs = [
                _measure(backend, watch, args.nprocs, args.children) for _ in range(args.repeat)
            ]
            numbers = [r for r in runs if isinstance(r, float)]
            if not numbers:
                print(f"{backend:<12}{watch:<8}{runs[0]:>10}")
                continue
            median, low, high = (
                1000 * statistics.median(numbers),
                1000 * min(numbers),
                1000 * max(numbers),
            )
            print(f"{backend:<12}{watch:<8}{median:>10.1f}{low:>9.1f}{high:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
