"""The ``spawnkit`` command: run a job (a function, a script or a module), list plugins."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__, _main
from ._api import (
    BACKEND_ENV,
    DEFAULT_BACKEND,
    DEFAULT_GRACE,
    option_hint,
    start_job,
    wait_in_foreground,
)
from ._errors import (
    ConfigError,
    PluginError,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    SpawnError,
    SpawnTimeoutError,
    UnknownOptionError,
)
from ._output import DEFAULT_PREFIX, console
from ._registry import BackendInfo, Plugins, WatchInfo, create_backend, describe, plugins
from ._restarts import RestartPolicy

if TYPE_CHECKING:
    from ._context import ProcessContext
    from ._report import JobReport

__all__ = ["main"]

# The exit status of a job whose deadline passed, as timeout(1) has it.
TIMEOUT_STATUS = 124
_NUMBER = re.compile(r"-\d+(\.\d*)?$")


class _UsageError(Exception):
    pass


def _resolve(target: str, args: Sequence[str]) -> Callable[..., Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SpawnError(
            f"TARGET must be 'package.module:function', a script path (train.py) or "
            f"-m package.module, not {target!r}"
        )
    _set_argv(module_name, args)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpawnError(f"cannot import {module_name!r} for TARGET {target!r}: {exc}") from exc
    module = obj
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpawnError(
                f"module {module_name!r} has no function {attr!r}; {_functions(module)}"
            ) from None
    if not callable(obj):
        raise SpawnError(f"TARGET {target!r} is {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _set_argv(module_name: str, args: Sequence[str]) -> None:
    """``sys.argv`` as ``python -m module ARGS`` has it, before the module is imported.

    A module may parse its arguments when imported; it must see its own, not spawnkit's
    ``run -n 2 ...``. The ranks inherit this ``sys.argv`` (every backend hands the parent's
    to its workers), so the check here and the import in a rank see the same.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None  # the import that follows says what is wrong
    origin = getattr(found, "origin", None)
    sys.argv = [origin if origin and os.path.isfile(origin) else module_name, *args]


def _functions(module: object) -> str:
    """The functions ``module`` defines, for a message about one it lacks."""
    import inspect

    name = getattr(module, "__name__", "")
    found = sorted(
        key
        for key, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == name and not key.startswith("_")
    )
    if not found:
        return "it defines no public function"
    return f"it has: {', '.join(found)}"


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
        return _main.run_module, (ns.module, *ns.args)
    target: str = ns.target
    if target.endswith(".py") or (os.path.isfile(target) and ":" not in target):
        if not os.path.isfile(target):
            raise SpawnError(f"script {target!r} does not exist")
        return _main.run_script, (os.path.abspath(target), *ns.args)
    return _main.run_function, (_resolve(target, ns.args), *ns.args)


def _table(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


_SINGULAR = {"backends": "backend", "watches": "watch"}


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
    conflicts = sorted(
        (c for c in loaded.conflicts if c.kind == _SINGULAR[kind]), key=lambda c: c.name
    )
    for conflict in conflicts:
        print(f"conflict: {conflict}")
    for broken in loaded.broken:
        print(f"broken: {broken}")
    failed = kind == "backends" and check and _check_factories(loaded)
    return 1 if check and (conflicts or loaded.broken or failed) else 0


def _check_factories(loaded: Plugins) -> bool:
    """Run each available backend's factory once with no options; print what raises."""
    failed = False
    for info in sorted(loaded.backends.values(), key=lambda i: i.name):
        if info.available:
            try:
                create_backend(info, {}, nprocs=1).close()
            except PluginError as exc:  # the factory raised, or made no backend: it says so
                failed = True
                print(f"check: {exc}")
            except Exception as exc:  # noqa: BLE001 - reported; the other backends still run
                failed = True
                called = f"backend {info.name!r} from {info.distribution!r}, with no options"
                print(f"check: {called}: {type(exc).__name__}: {exc}")
    return failed


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
        report = ctx.report()
        states = [r.state for r in report.ranks]
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
        attempt = f" | attempt {report.attempt}" if report.attempt else ""
        console.status(
            f"spawnkit: {len(states)} ranks: {', '.join(counts)}{attempt} | {took:.1f} s"
        )

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


def _check_json(path: str) -> None:
    """Refuse a ``--json`` path the report could not be written to, before the job starts:
    finding out once the job has run would lose the report of a job that may have taken hours."""
    if path == "-":
        return
    if os.path.isdir(path):
        raise SpawnError(
            f"--json {path!r}: is a directory; give a file path, such as "
            f"{os.path.join(path, 'report.json')!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise SpawnError(
            f"--json {path!r}: its directory {folder!r} does not exist; create it first"
        )
    if not os.path.isdir(folder):
        raise SpawnError(f"--json {path!r}: {folder!r} is not a directory; give another path")
    writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(folder, os.W_OK)
    if not writable:
        where = f"file {path!r}" if os.path.exists(path) else f"directory {folder!r}"
        raise SpawnError(f"--json {path!r}: {where} is not writable; give a path you can write")


def _ranks(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ranks takes rank numbers separated by commas, such as 0 or 0,3; not {text!r}"
        ) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of ranks >= 1, not {text!r}")
    return value


def _restarts(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"--max-restarts takes a whole number >= 0 (0: no restart), not {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {text!r}")
    return value


def _option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--option``: VALUE as a Python literal when it is one, else the text."""
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"--option takes NAME=VALUE, such as preload='[\"numpy\"]'; not {text!r}"
        )
    try:
        return name, ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return name, value


def _backend_options(ns: argparse.Namespace) -> dict[str, Any]:
    """``--option``'s backend options, each named once and taken by the chosen backend."""
    options: dict[str, Any] = {}
    for name, value in ns.options:
        if name in options:
            raise SpawnError(f"--option {name}=... is given twice; give it once")
        options[name] = value
    registry = plugins()
    try:
        info = registry.backend(ns.backend or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND)
    except SpawnError:
        return options  # start_job says what is wrong with the name, $SPAWNKIT_BACKEND's too
    _check_options(info, options, registry)
    return options


def _in_flag_terms(exc: ConfigError, ns: argparse.Namespace) -> str:
    """The API's error about one of ``spawn()``'s parameters, as the flag that set it."""
    flag = "--" + (exc.parameter or "").replace("_", "-")
    if exc.parameter is None or flag not in _option_strings(_parser()[1]):
        return str(exc)
    value = getattr(ns, exc.parameter)
    shown = ",".join(map(str, value)) if exc.parameter == "ranks" else shlex.quote(str(value))
    text = _PARAMETER.sub(lambda m: f"--{m[1].replace('_', '-')} ", str(exc))
    return f"{flag} {shown}: {text}"


def _check_options(info: BackendInfo, options: dict[str, Any], registry: Plugins) -> None:
    """``--option NAME=...`` names an option of the chosen backend, or gets told what does."""
    for name in sorted(set(options) - info.options):
        accepted = ", ".join(sorted(info.options)) or "none"
        close, others = option_hint(name, info, registry)
        if close:
            hint = f"did you mean --option {close}=...?"
        elif others:
            names = ", ".join(map(repr, others))
            hint = f"it is an option of backend {names}: pass --backend {others[0]}"
        elif f"--{name.replace('_', '-')}" in _takes_value(_parser()[1]):
            hint = f"it is spawnkit's own: pass --{name.replace('_', '-')}"
        else:
            hint = "'spawnkit backends' lists the backends"
        raise UnknownOptionError(
            f"--option {name}={_shown(options[name])}: backend {info.name!r} does not take "
            f"option {name!r}; it takes: {accepted}; {hint}"
        )


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


# ``name=`` of a spawn() parameter that has a flag, as the API's messages write a fix.
_PARAMETER = re.compile(r"\b(log_dir|redirect|tee|prefix|ranks|watch|nprocs|timeout)=")


def _run(ns: argparse.Namespace) -> int:
    if ns.json:
        _check_json(ns.json)
    options = _backend_options(ns)
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
        options=options,
        restarts=RestartPolicy(ns.max_restarts, ns.restart_delay),
    )
    ctx.on_stop = lambda line: _say(f"spawnkit: {line}")
    _quiet_logs()
    live = sys.stderr is not None and sys.stderr.isatty()
    try:
        wait_in_foreground(ctx, tick=_progress(ctx, started) if live else None)
    except SpawnError as exc:
        # A rank's failure, the deadline, or (after restarts) an attempt that could not start.
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
    parser.add_argument("--version", action="version", version=f"spawnkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        usage=_RUN_USAGE,
        help="run a function, script or module in N processes",
        description="Run TARGET in N processes as one job. TARGET is 'package.module:function' "
        "(called as function(rank, *ARGS)), or a script path run as __main__ with ARGS as "
        "its sys.argv, or -m MODULE. spawnkit's options go before TARGET; the words after it "
        "are the job's ARGS, except one of spawnkit's options, which goes after '--' if the "
        "job's. Every rank gets RANK, LOCAL_RANK, WORLD_SIZE, "
        "LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Exits 0 on success, else with the "
        "failing rank's exit code (128+N for signal N, 124 past --timeout, 1 otherwise).",
    )
    run.add_argument("-n", "--nprocs", type=_count, default=1, help="number of ranks (default 1)")
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
        "--max-restarts",
        type=_restarts,
        default=0,
        metavar="N",
        help="when a rank fails, stop the job and start it again, up to N times (default 0); "
        "ranks see the attempt in TORCHELASTIC_RESTART_COUNT",
    )
    run.add_argument(
        "--restart-delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="seconds between a failed attempt and the next (default 0)",
    )
    run.add_argument(
        "--log-dir",
        metavar="DIR",
        help="write DIR/<rank>/stdout.log and stderr.log per rank "
        "(DIR/attempt_<k>/<rank>/... with --max-restarts)",
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
    run.add_argument(
        "-o",
        "--option",
        dest="options",
        type=_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a backend option, as spawn(NAME=VALUE) takes it (repeatable); VALUE is read as "
        "a Python literal when it is one (a list, number, string, True, None...), else as "
        "text: -o preload='[\"numpy\"]' -o cwd=/data. 'spawnkit backends' lists the "
        "backends; each takes its own options",
    )
    run.add_argument("target", metavar="TARGET", nargs="?", help="what every rank runs")
    run.add_argument("args", metavar="ARGS", nargs="*", help="its string arguments")
    for kind, what in (
        ("backends", "backends: available or why not, and who provides them"),
        ("watches", "parent-death watches, and the one --watch auto picks here"),
    ):
        listing = sub.add_parser(
            kind, help=f"list {what}", description=f"List the installed {what}."
        )
        listing.add_argument(
            "--check",
            action="store_true",
            help=f"exit with status 1 if two {kind} share a name, or a plugin failed to "
            "load"
            + (", or a backend's factory raises when called with no options" * (kind == "backends"))
            + " (for CI)",
        )
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
    ours = _option_strings(run)
    if any(_is_ours(word, ours) for word in after):
        raise _UsageError(_reorder(options, target, after, valued, ours, module))
    return options, [*rest, *tail]


def _option_strings(run: argparse.ArgumentParser) -> set[str]:
    return {option for action in run._actions for option in action.option_strings}


def _is_ours(word: str, ours: set[str]) -> bool:
    """Whether argparse would take ``word`` for one of spawnkit's options: the option itself,
    ``--name=value``, an abbreviation (``--time``) or a short one with its value (``-n2``)."""
    if not _is_option(word):
        return False
    name = word.split("=", 1)[0]
    if name.startswith("--"):
        return any(option.startswith(name) for option in ours if option.startswith("--"))
    return name[:2] in ours


def _reorder(
    options: list[str],
    target: list[str],
    after: list[str],
    valued: set[str],
    ours: set[str],
    module: bool,
) -> str:
    """The message for options after TARGET: both orders it may have meant, runnable."""
    moved: list[str] = []
    kept: list[str] = []
    words = iter(after)
    for word in words:
        if _is_ours(word, ours):
            moved.append(word)
            value = next(words, None) if word in valued else None
            if value is not None:
                moved.append(value)
        else:
            kept.append(word)
    first = next(word for word in after if _is_ours(word, ours))
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
        text = _in_flag_terms(exc, ns) if isinstance(exc, ConfigError) else str(exc)
        print(f"spawnkit: error: {text}", file=sys.stderr)
        return 2
