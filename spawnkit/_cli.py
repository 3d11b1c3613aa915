"""The ``spawnkit`` command: run a function as a job, list backends and parent watches."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._api import spawn
from ._errors import ProcessException, ProcessExitedException, SpawnError
from ._registry import BackendInfo, WatchInfo, describe, plugins

__all__ = ["main"]


def _resolve(target: str) -> Callable[..., Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SpawnError(f"TARGET must look like 'package.module:function', not {target!r}")
    # As `python -m` does: the current directory is importable, so local modules run as-is.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpawnError(f"cannot import {module_name!r} for TARGET {target!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpawnError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise SpawnError(f"TARGET {target!r} is {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _table(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def _list(kind: str, check: bool) -> int:
    loaded = plugins()
    infos: list[BackendInfo | WatchInfo] = list(
        loaded.backends.values() if kind == "backends" else loaded.watches.values()
    )
    rows = [dict(describe(info)) for info in sorted(infos, key=lambda i: i.name)]
    print(_table(rows, ["name", "status", "distribution", "description"]))
    conflicts = sorted((c for c in loaded.conflicts if c.kind == kind[:-1]), key=lambda c: c.name)
    for conflict in conflicts:
        print(f"conflict: {conflict}")
    for broken in loaded.broken:
        print(f"broken: {broken}")
    return 1 if check and (conflicts or loaded.broken) else 0


def _exit_status(exc: ProcessException) -> int:
    if isinstance(exc, ProcessExitedException):
        return 128 - exc.exit_code if exc.exit_code < 0 else exc.exit_code or 1
    return 1


def _run(ns: argparse.Namespace) -> int:
    fn = _resolve(ns.target)
    try:
        spawn(fn, args=tuple(ns.args), nprocs=ns.nprocs, backend=ns.backend, watch=ns.watch)
    except ProcessException as exc:
        print(f"spawnkit: {exc}".rstrip(), file=sys.stderr)
        return _exit_status(exc)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spawnkit", description="Run a function in N worker processes as one job."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run TARGET(rank, *ARGS) in N processes",
        description="Run 'package.module:function' as function(rank, *ARGS) in N processes. "
        "Exits 0 on success, else with the failing rank's exit code (or 1).",
    )
    run.add_argument("-n", "--nprocs", type=int, default=1, help="number of ranks (default 1)")
    run.add_argument(
        "-b",
        "--backend",
        default=None,
        help="backend name (default: $SPAWNKIT_BACKEND, else spawn)",
    )
    run.add_argument("-w", "--watch", default="auto", help="parent watch (default: auto)")
    run.add_argument("target", metavar="TARGET", help="package.module:function")
    run.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="string arguments")
    check = "exit with status 1 if a plugin is broken or shares a name with another (for CI)"
    backends = sub.add_parser(
        "backends", help="list backends: available or why not, and who provides them"
    )
    backends.add_argument("--check", action="store_true", help=check)
    watches = sub.add_parser("watches", help="list parent-death watches")
    watches.add_argument("--check", action="store_true", help=check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spawnkit`` command; returns the exit status."""
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "run":
            return _run(ns)
        return _list(ns.command, ns.check)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except SpawnError as exc:
        print(f"spawnkit: error: {exc}", file=sys.stderr)
        return 2
