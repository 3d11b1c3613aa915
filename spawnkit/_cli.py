"""The ``spawnkit`` command: run a job (a function, a script or a module), list plugins."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import _run_target
from ._api import BACKEND_ENV, DEFAULT_GRACE, start_job, wait_in_foreground
from ._errors import (
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    SpawnError,
    SpawnTimeoutError,
)
from ._output import DEFAULT_PREFIX, console
from ._registry import BackendInfo, WatchInfo, describe, plugins

if TYPE_CHECKING:
    from ._context import ProcessContext
    from ._report import JobReport

__all__ = ["main"]

# The exit status of a job whose deadline passed, as timeout(1) has it.
TIMEOUT_STATUS = 124
_NUMBER = re.compile(r"-\d+(\.\d*)?$")


class _UsageError(Exception):
    pass


def _resolve(target: str) -> Callable[..., Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SpawnError(
            f"TARGET must be 'package.module:function', a script path (train.py) or "
            f"-m package.module, not {target!r}"
        )
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


def _job(ns: argparse.Namespace) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The function every rank runs and its arguments, for TARGET and ARGS."""
    # As `python -m` does: the current directory is importable, so local modules run as-is.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if ns.module is not None:
        import importlib.util

        try:
            found = importlib.util.find_spec(ns.module)
        except (ImportError, ValueError) as exc:
            raise SpawnError(f"cannot find module {ns.module!r} for -m: {exc}") from exc
        if found is None:
            raise SpawnError(f"no module named {ns.module!r} (for -m) on sys.path")
        return _run_target.module, (ns.module, *ns.args)
    target: str = ns.target
    if target.endswith(".py") or (os.path.isfile(target) and ":" not in target):
        if not os.path.isfile(target):
            raise SpawnError(f"script {target!r} does not exist")
        return _run_target.script, (os.path.abspath(target), *ns.args)
    return _run_target.call, (_resolve(target), *ns.args)


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
    if kind == "watches":
        try:
            print(f"auto: {loaded.watch('auto').name!r} here (the best available)")
        except SpawnError as exc:
            print(f"auto: none: {exc}")
    conflicts = sorted((c for c in loaded.conflicts if c.kind == kind[:-1]), key=lambda c: c.name)
    for conflict in conflicts:
        print(f"conflict: {conflict}")
    for broken in loaded.broken:
        print(f"broken: {broken}")
    return 1 if check and (conflicts or loaded.broken) else 0


def _exit_status(exc: BaseException) -> int:
    if isinstance(exc, SpawnTimeoutError):
        return TIMEOUT_STATUS
    if isinstance(exc, ProcessExitedException):
        return 128 - exc.exit_code if exc.exit_code < 0 else exc.exit_code or 1
    return 1


def _say(text: str) -> None:
    console.write(2, f"{text}\n".encode(errors="replace"))


def _progress(ctx: ProcessContext, started: float) -> Callable[[], None]:
    """The status line's painter: ranks running / finished / failed, and the time."""

    def tick() -> None:
        states = [r.state for r in ctx.report().ranks]
        counts = [
            f"{states.count(state)} {label}"
            for state, label in (
                ("running", "running"),
                ("succeeded", "finished"),
                ("failed", "failed"),
                ("stopped", "stopped"),
            )
            if states.count(state) or state != "stopped"
        ]
        took = time.monotonic() - started
        console.status(f"spawnkit: {len(states)} ranks: {', '.join(counts)} | {took:.1f} s")

    return tick


def _failure_text(exc: BaseException) -> str:
    """What the user reads about a failed job: the root cause's traceback once, the report."""
    parts = []
    if isinstance(exc, ProcessRaisedException):
        pid = "" if exc.pid is None else f" (pid {exc.pid})"
        parts.append(f"spawnkit: rank {exc.error_index}{pid} raised:")
        parts.append(exc.remote_traceback.rstrip())
    elif isinstance(exc, ProcessException):
        parts.append(f"spawnkit: {exc.msg.strip()}")
    else:
        parts.append(f"spawnkit: {exc}")
    report: JobReport | None = getattr(exc, "report", None)
    if report is not None:
        parts.append(report.format())
    return "\n".join(parts)


def _quiet_logs() -> None:
    """The command says what it stops in its own words (``on_stop``): the library's
    per-process warnings, written for programs ported from torch, would repeat it."""
    import logging

    logger = logging.getLogger("spawnkit")
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("spawnkit: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def _write_json(path: str, ctx: ProcessContext, status: int) -> None:
    data = {"exit_status": status, **ctx.report().as_dict()}
    text = json.dumps(data, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def _ranks(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ranks takes rank numbers separated by commas, such as 0 or 0,3; not {text!r}"
        ) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {text!r}")
    return value


def _run(ns: argparse.Namespace) -> int:
    fn, args = _job(ns)
    started = time.monotonic()
    ctx = start_job(
        fn,
        args,
        ns.nprocs,
        join=True,
        daemon=False,
        backend=ns.backend,
        watch=ns.watch,
        grace_period=ns.grace_period,
        start_method=None,
        env=None,
        timeout=ns.timeout,
        log_dir=ns.log_dir,
        redirect=ns.redirect,
        tee=ns.tee,
        prefix=ns.prefix,
        ranks=ns.ranks,
        faulthandler=True,
        options={},
    )
    ctx.on_stop = lambda line: _say(f"spawnkit: {line}")
    _quiet_logs()
    live = sys.stderr is not None and sys.stderr.isatty()
    try:
        wait_in_foreground(ctx, tick=_progress(ctx, started) if live else None)
    except (ProcessException, SpawnTimeoutError) as exc:
        console.status("")
        _say(_failure_text(exc))
        status = _exit_status(exc)
    except KeyboardInterrupt:
        console.status("")
        _say("spawnkit: interrupted; the job was stopped")
        status = 128 + signal.SIGINT
        if ns.json:
            _write_json(ns.json, ctx, status)
        raise
    else:
        console.status("")
        if live:
            _say(f"spawnkit: {ns.nprocs} ranks finished in {time.monotonic() - started:.1f} s")
        status = 0
    if ns.json:
        _write_json(ns.json, ctx, status)
    return status


_RUN_USAGE = "spawnkit run [OPTIONS] (TARGET | -m MODULE) [ARGS ...] [-- ARGS ...]"


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="spawnkit", description="Run a function in N worker processes as one job."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        usage=_RUN_USAGE,
        help="run a function, script or module in N processes",
        description="Run TARGET in N processes as one job. TARGET is 'package.module:function' "
        "(called as function(rank, *ARGS)), or a script path run as __main__ with ARGS as "
        "its sys.argv, or -m MODULE. Options go before TARGET; ARGS after it, or after '--' "
        "when they start with '-'. Every rank gets RANK, LOCAL_RANK, WORLD_SIZE, "
        "LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Exits 0 on success, else with the "
        "failing rank's exit code (128+N for signal N, 124 past --timeout, 1 otherwise).",
    )
    run.add_argument("-n", "--nprocs", type=int, default=1, help="number of ranks (default 1)")
    run.add_argument(
        "-b",
        "--backend",
        default=None,
        help=f"backend name (default: ${BACKEND_ENV}, else spawn)",
    )
    run.add_argument("-w", "--watch", default="auto", help="parent watch (default: auto)")
    run.add_argument(
        "-m", dest="module", metavar="MODULE", help="run MODULE as __main__ in every rank"
    )
    run.add_argument(
        "--grace-period",
        type=_seconds,
        default=DEFAULT_GRACE,
        metavar="S",
        help=f"seconds between SIGTERM and SIGKILL when stopping ranks (default {DEFAULT_GRACE:g})",
    )
    run.add_argument(
        "--timeout", type=_seconds, metavar="S", help="stop the job after S seconds (exit 124)"
    )
    run.add_argument(
        "--log-dir", metavar="DIR", help="write DIR/<rank>/stdout.log and stderr.log per rank"
    )
    streams = ["all", "out", "err", "none"]
    run.add_argument(
        "--redirect",
        choices=streams,
        help="streams that go to the logs (default: all, with --log-dir)",
    )
    run.add_argument(
        "--tee",
        choices=streams,
        default="none",
        help="redirected streams also shown on the console (default: none)",
    )
    run.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        metavar="FORMAT",
        help=f"prefix of each console line, {{rank}} the rank (default {DEFAULT_PREFIX!r})",
    )
    run.add_argument(
        "--ranks",
        type=_ranks,
        metavar="LIST",
        help="show only these ranks' output on the console, such as 0 or 0,3 (default: all)",
    )
    run.add_argument(
        "--json",
        metavar="PATH",
        help="write a summary of every rank as JSON to PATH ('-': stdout) when the job ends",
    )
    run.add_argument("target", metavar="TARGET", nargs="?", help="what every rank runs")
    run.add_argument("args", metavar="ARGS", nargs="*", help="its string arguments")
    check = "exit with status 1 if a plugin is broken or shares a name with another (for CI)"
    backends = sub.add_parser(
        "backends", help="list backends: available or why not, and who provides them"
    )
    backends.add_argument("--check", action="store_true", help=check)
    watches = sub.add_parser(
        "watches", help="list parent-death watches, and the one watch='auto' picks here"
    )
    watches.add_argument("--check", action="store_true", help=check)
    return parser, run


def _takes_value(run: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in run._actions
        if action.option_strings and action.nargs != 0
        for option in action.option_strings
    }


def _is_option(word: str) -> bool:
    return word.startswith("-") and word != "-" and not _NUMBER.match(word)


def _split_run(argv: list[str], run: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``spawnkit run``'s own options (``-m MODULE`` last, if given), and the rest.

    Options go before TARGET (or ``-m MODULE``, which ends them, as for ``python -m``). One
    after it would be ambiguous (is ``-n 2`` for spawnkit or for the job?), so it is refused
    unless it comes after ``--``.
    """
    head, tail = argv, []
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut + 1 :]
    valued = _takes_value(run)
    i = 0
    module = False
    while i < len(head) and _is_option(head[i]) and not module:
        name = head[i].split("=", 1)[0]
        attached = name.startswith("-m") and len(name) > 2  # -mpkg.mod
        module = name == "-m" or attached
        i += 2 if name in valued and "=" not in head[i] else 1
    options, rest = head[:i], head[i:]
    target, after = ([], rest) if module else (rest[:1], rest[1:])
    stray = [word for word in after if _is_option(word)]
    if stray:
        raise _UsageError(_reorder(options, target, after, valued, module))
    return options, [*rest, *tail]


def _reorder(
    options: list[str], target: list[str], after: list[str], valued: set[str], module: bool
) -> str:
    """The message for options after TARGET: both orders it may have meant, runnable."""
    import shlex

    moved: list[str] = []
    kept: list[str] = []
    words = iter(after)
    for word in words:
        if _is_option(word):
            moved.append(word)
            value = next(words, None) if word in valued else None
            if value is not None:
                moved.append(value)
        else:
            kept.append(word)
    first = next(word for word in after if _is_option(word))
    if module:  # -m MODULE ends the options: the moved ones go before it
        cut = len(options) - (1 if options[-1].startswith("-m") and len(options[-1]) > 2 else 2)
        ahead = [*options[:cut], *moved, *options[cut:]]
        what = " ".join(options[cut:])
    else:
        ahead = [*options, *moved, *target]
        what = target[0]
    spawnkit_first = shlex.join(["spawnkit", "run", *ahead, *kept])
    job_first = shlex.join(["spawnkit", "run", *options, *target, "--", *after])
    return (
        f"option {first!r} comes after {what!r}. If it is spawnkit's, put it before: "
        f"{spawnkit_first}; if it is the job's, put it after '--': {job_first}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spawnkit`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, run = _parser()
    if argv[:1] == ["run"]:
        try:
            options, rest = _split_run(argv[1:], run)
        except _UsageError as exc:
            run.error(str(exc))
        ns = parser.parse_args(["run", *options])
        positional = rest
        if ns.module is None:
            if not positional:
                run.error("TARGET is missing: 'package.module:function', a script, or -m MODULE")
            ns.target, ns.args = positional[0], positional[1:]
        else:
            ns.target, ns.args = None, positional
    else:
        ns = parser.parse_args(argv)
    try:
        if ns.command == "run":
            return _run(ns)
        return _list(ns.command, ns.check)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except SpawnError as exc:
        print(f"spawnkit: error: {exc}", file=sys.stderr)
        return 2
