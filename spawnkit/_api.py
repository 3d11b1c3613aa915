"""The public entry points: ``spawn``, ``start_processes`` and the listings."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from ._context import ProcessContext, check_seconds, launch
from ._errors import (
    ConfigError,
    InvalidArgumentError,
    NotPicklableError,
    UnknownBackendError,
    UnknownOptionError,
    safe_str,
)
from ._main import refuse_missing_main_file, refuse_while_importing_main
from ._pickling import PickledJob, dumps_job
from ._rank_env import rank_envs
from ._registry import BackendInfo, Plugins, create_backend, plugins
from ._restarts import Attempt, RestartPolicy, Restarts
from ._signals.foreground import foreground
from ._tracker import shared_tracker

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._context import RankJob
    from ._output import OutputPlan
    from ._rank_env import EnvOption
    from ._restarts import DelayOption, NoRestartOption

__all__ = [
    "ENV_VAR_PARALLEL_START",
    "available_backends",
    "available_watches",
    "spawn",
    "start_processes",
]

BACKEND_ENV = "SPAWNKIT_BACKEND"
# torch's switch for starting forkserver ranks in parallel. spawnkit starts every backend's
# ranks in parallel always: the variable is accepted and changes nothing.
ENV_VAR_PARALLEL_START = "TORCH_MP_PARALLEL_START"
DEFAULT_BACKEND = "spawn"
DEFAULT_GRACE = 5.0


def available_backends() -> list[str]:
    """Names of the installed backends that can run on this machine, sorted."""
    return sorted(name for name, info in plugins().backends.items() if info.available)


def available_watches() -> list[str]:
    """Names of the parent watches that can run on this machine, sorted.

    ``watch="auto"`` is always accepted too: it picks the best of these.
    """
    return sorted(name for name, info in plugins().watches.items() if info.available)


def _describe(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _fork_context(error: BaseException) -> bool:
    """Whether pickling failed on an object of a ``fork`` context (a queue, a lock...).

    ``multiprocessing`` refuses to send those to a new interpreter and says so in its
    message, the only place the reason shows.
    """
    return "fork context" in safe_str(error)


def _payload(
    info: BackendInfo, fn: Callable[..., Any], args: tuple[Any, ...], tracker: bool
) -> PickledJob:
    try:
        job = dumps_job((fn, args), remote=info.remote, tracker=tracker)
    except Exception as whole:
        culprit, error, found = "fn", whole, fn
        for label, obj in [("fn", fn), *((f"args[{i}]", a) for i, a in enumerate(args))]:
            try:
                dumps_job(obj, remote=info.remote)
            except Exception as exc:  # noqa: BLE001
                culprit, error, found = f"{label} {_describe(obj)}", exc, obj
                break
        # The reason is often a sentence of its own (multiprocessing's end with a period).
        reason = safe_str(error).rstrip().rstrip(".")
        raise NotPicklableError(
            f"cannot pickle {culprit} for backend {info.name!r}: {reason}. Backend "
            f"{info.name!r} sends fn and args to a new interpreter, so they must be picklable"
            f"{_fixes(by_value=_is_code(found), fork_context=_fork_context(error))}"
        ) from whole
    if job.by_value_missing:
        # Pickled by name, which a new interpreter could not resolve: refused here, before
        # any process starts, rather than failing in every worker.
        obj, why = job.by_value_missing[0]
        raise NotPicklableError(
            f"cannot send {_describe(obj)} to backend {info.name!r}: {why}, so a new "
            f"interpreter cannot import it by name{_fixes(by_value=True)}"
        )
    if job.fds and info.remote:
        raise NotPicklableError(
            f"cannot send args to backend {info.name!r}: they hold {len(job.fds)} file "
            "descriptor(s) (a multiprocessing Queue, Pipe, Lock, shared array or a socket), "
            f"and backend {info.name!r} runs its workers outside this machine's process "
            "tree, where no descriptor of this process can go; pass plain data, or use a "
            "local backend such as 'forkserver'"
        )
    return job


def _is_code(obj: object) -> bool:
    import types

    return isinstance(obj, (types.FunctionType, types.MethodType, type))


def _fixes(*, by_value: bool, fork_context: bool = False) -> str:
    fixes = []
    if fork_context:
        fixes.append(
            'create it with multiprocessing.get_context("spawn") (or '
            'spawnkit.get_context("spawn")), whose objects a new interpreter can receive'
        )
    if by_value:
        fixes.append("define it at module level of a module file")
        try:
            import cloudpickle  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
        except ImportError:
            fixes.append(
                'install cloudpickle (pip install "spawnkit[cloudpickle]") to send it by value'
            )
    in_memory = _in_memory()
    if in_memory:
        fixes.append(f"use a backend that does not pickle: {', '.join(map(repr, in_memory))}")
    return "; fixes: " + "; ".join(fixes) if fixes else ""


def _in_memory() -> list[str]:
    """The available backends that hand ``fn`` and ``args`` over without pickling them."""
    return sorted(name for name, b in plugins().backends.items() if b.available and not b.pickles)


def _refuse_ignored_sigchld() -> None:
    if hasattr(signal, "SIGCHLD") and signal.getsignal(signal.SIGCHLD) is signal.SIG_IGN:
        raise ConfigError(
            "SIGCHLD is ignored in this process (signal.SIG_IGN), so the system discards "
            "every child's exit status and spawnkit could not tell a failed rank from a "
            "successful one; restore the default before starting a job: "
            "signal.signal(signal.SIGCHLD, signal.SIG_DFL)"
        )


def _validate(fn: object, args: object, nprocs: object, grace_period: object) -> None:
    if callable(args) and not isinstance(args, (tuple, list)):
        args = ()  # per-rank args: checked rank by rank (_rank_args)
    if isinstance(nprocs, bool) or not isinstance(nprocs, int):
        raise InvalidArgumentError(f"nprocs must be an int >= 1, not {nprocs!r}")
    if nprocs < 1:
        raise ConfigError(f"nprocs must be >= 1, not {nprocs}; pass the number of ranks to run")
    if not callable(fn):
        raise InvalidArgumentError(
            f"fn must be callable as fn(rank, *args), not {_describe(fn)} "
            f"of type {type(fn).__name__}"
        )
    if not isinstance(args, (tuple, list)):
        raise InvalidArgumentError(
            f"args must be a tuple or list of extra arguments for fn, not "
            f"{type(args).__name__} {_describe(args)}; for one argument write args=(value,)"
        )
    check_seconds("grace_period", grace_period)


def _rank_args(args: object, nprocs: int) -> list[tuple[Any, ...]]:
    """Every rank's ``args``: the same for all, or ``args(rank)`` of a callable."""
    if isinstance(args, (tuple, list)):
        return [tuple(args)] * nprocs
    assert callable(args)  # _validate let nothing else through
    per_rank = []
    for rank in range(nprocs):
        got = args(rank)
        if not isinstance(got, (tuple, list)):
            raise InvalidArgumentError(
                f"args({rank}) must return a tuple or list of extra arguments for fn, not "
                f"{type(got).__name__} {_describe(got)}; for one argument return (value,)"
            )
        per_rank.append(tuple(got))
    return per_rank


def _jobs(
    info: BackendInfo, fn: Callable[..., Any], per_rank: list[tuple[Any, ...]]
) -> list[RankJob]:
    """What each rank runs: pickled here for a backend that pickles, else as it is."""
    if not info.pickles:
        return [(None, (fn, a), ()) for a in per_rank]
    # A local rank shares this process's resource tracker, as the stdlib's spawn does.
    share = not info.remote and sys.platform != "win32"
    pickled: dict[int, tuple[tuple[Any, ...], PickledJob]] = {}
    for a in per_rank:
        if id(a) not in pickled:  # the same args for every rank: pickled once
            pickled[id(a)] = (a, _payload(info, fn, a, share))
    if share:
        # Looked up (and started) once every payload pickled: bad input starts no process.
        fd = shared_tracker()
        for key, (a, job) in pickled.items():
            pickled[key] = (a, _payload(info, fn, a, False) if fd is None else job.with_tracker(fd))
    return [(job.data, None, job.fds) for job in (pickled[id(a)][1] for a in per_rank)]


def _backend_name(backend: str | None, start_method: str | None, registry: Plugins) -> BackendInfo:
    if start_method is not None:
        if backend is not None and backend != start_method:
            raise ConfigError(
                f"backend={backend!r} and start_method={start_method!r} disagree; "
                "start_method is torch's name for backend: pass one of them"
            )
        backend = start_method
    from_env = backend is None and bool(os.environ.get(BACKEND_ENV))
    if backend is None:
        backend = os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise InvalidArgumentError(f"backend must be a backend name (str), not {backend!r}")
    try:
        return registry.backend(backend)
    except UnknownBackendError as exc:
        if not from_env:
            raise
        raise UnknownBackendError(
            f"${BACKEND_ENV}={backend!r} names no installed backend: {exc}. Fix or unset "
            f"the environment variable {BACKEND_ENV}, or pass backend= explicitly"
        ) from None


def option_hint(
    name: str, info: BackendInfo, registry: Plugins, own: Iterable[str] = ()
) -> tuple[str | None, list[str]]:
    """For an option ``name`` that ``info``'s backend does not take: the name it may have
    meant (one of the backend's, or of ``own``), if any; and the backends that take it."""
    import difflib

    close = difflib.get_close_matches(name, [*info.options, *own], n=1)
    others = sorted(b.name for b in registry.backends.values() if name in b.options)
    return (close[0] if close else None), others


def _check_options(info: BackendInfo, options: dict[str, Any], registry: Plugins) -> None:
    import inspect

    unknown = sorted(set(options) - info.options)
    if not unknown:
        return
    accepted = ", ".join(sorted(info.options)) or "none"
    hints = []
    own = [p for p in inspect.signature(spawn).parameters if p not in ("fn", "options")]
    for name in unknown:
        close, others = option_hint(name, info, registry, own)
        if close:
            hints.append(f"did you mean {close!r} instead of {name!r}?")
        elif others:
            names = ", ".join(map(repr, others))
            hints.append(f"{name!r} is an option of backend {names}: pass backend={others[0]!r}")
    raise UnknownOptionError(
        f"backend {info.name!r} does not take option(s) {', '.join(unknown)}; "
        f"it accepts: {accepted}" + ("; " + "; ".join(hints) if hints else "")
    )


def _output_plan(
    info: BackendInfo,
    nprocs: int,
    log_dir: Any,
    redirect: Any,
    tee: Any,
    prefix: Any,
    ranks: Any,
) -> OutputPlan | None:
    if log_dir is None and redirect is None and not tee and prefix is None and ranks is None:
        return None
    if info.remote and (log_dir is not None or redirect or prefix is not None or ranks is not None):
        raise ConfigError(
            f"backend {info.name!r} runs its workers outside this machine's process tree, "
            "where their output cannot be pointed at files or relayed here: log_dir, "
            "redirect, tee, prefix and ranks need a local backend such as 'forkserver'"
        )
    from ._output import OutputPlan

    plan = OutputPlan(nprocs, log_dir, redirect, tee, prefix, ranks)
    return plan if plan.active else None


@overload
def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] | Callable[[int], Sequence[Any]] = (),
    nprocs: int = 1,
    join: Literal[True] = True,
    daemon: bool = False,
    backend: str | None = None,
    *,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    env: EnvOption = None,
    timeout: float | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    redirect: str | bool | None = None,
    tee: str | bool = False,
    prefix: str | None = None,
    ranks: Iterable[int] | None = None,
    faulthandler: bool = True,
    max_restarts: int = 0,
    restart_delay: DelayOption = 0.0,
    no_restart_on: NoRestartOption = None,
    **options: Any,
) -> list[Any]: ...


@overload
def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] | Callable[[int], Sequence[Any]] = (),
    nprocs: int = 1,
    *,
    join: Literal[False],
    daemon: bool = False,
    backend: str | None = None,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    env: EnvOption = None,
    timeout: float | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    redirect: str | bool | None = None,
    tee: str | bool = False,
    prefix: str | None = None,
    ranks: Iterable[int] | None = None,
    faulthandler: bool = True,
    max_restarts: int = 0,
    restart_delay: DelayOption = 0.0,
    no_restart_on: NoRestartOption = None,
    **options: Any,
) -> ProcessContext: ...


@overload
def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] | Callable[[int], Sequence[Any]] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    backend: str | None = None,
    *,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    env: EnvOption = None,
    timeout: float | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    redirect: str | bool | None = None,
    tee: str | bool = False,
    prefix: str | None = None,
    ranks: Iterable[int] | None = None,
    faulthandler: bool = True,
    max_restarts: int = 0,
    restart_delay: DelayOption = 0.0,
    no_restart_on: NoRestartOption = None,
    **options: Any,
) -> list[Any] | ProcessContext: ...


def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] | Callable[[int], Sequence[Any]] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    backend: str | None = None,
    *,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    env: EnvOption = None,
    timeout: float | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    redirect: str | bool | None = None,
    tee: str | bool = False,
    prefix: str | None = None,
    ranks: Iterable[int] | None = None,
    faulthandler: bool = True,
    max_restarts: int = 0,
    restart_delay: DelayOption = 0.0,
    no_restart_on: NoRestartOption = None,
    **options: Any,
) -> list[Any] | ProcessContext:
    """Run ``fn(rank, *args)`` in ``nprocs`` worker processes, as one job.

    A drop-in for ``torch.multiprocessing.spawn`` that does not need torch.

    Args:
        fn: a callable taking the rank first. Backends that start a new interpreter need it
            picklable: a function at module level of an importable module.
        args: extra positional arguments for every rank, or a callable ``rank -> args``
            that gives each rank its own (called here, before any process starts).
        nprocs: number of ranks, >= 1.
        join: wait for the job and return the results (``True``), or return the running
            :class:`SpawnContext` at once (``False``).
        daemon: stop the workers when the parent exits normally without joining; otherwise
            the exiting parent waits for them.
        backend: how processes start: ``"spawn"``, ``"forkserver"``, ``"fork"``,
            ``"subprocess"`` or a plugin's; default ``$SPAWNKIT_BACKEND``, else ``"spawn"``.
        watch: how workers notice the parent's death (``"auto"``: the best one here).
        grace_period: seconds between SIGTERM and SIGKILL when stopping workers.
        start_method: torch's name for ``backend``, accepted so torch code ports as is.
        env: variables set in every rank's environment: a mapping, or a callable
            ``rank -> mapping``. Every rank also gets ``RANK``, ``LOCAL_RANK``,
            ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (a
            free port, unless the parent's environment sets them), as under ``torchrun``.
        timeout: a deadline for the whole job, in seconds: once it passes, every rank still
            running is stopped (SIGTERM, then SIGKILL after ``grace_period``) and
            :class:`SpawnTimeoutError` raised. Kept while ``join()`` or ``results()`` waits.
        log_dir: a folder for per-rank logs: rank ``i`` writes ``log_dir/i/stdout.log`` and
            ``stderr.log`` (at the descriptor level: C extensions and subprocesses too).
        redirect: which streams go to the logs: ``"all"`` (default with ``log_dir``),
            ``"out"``, ``"err"`` or ``"none"``.
        tee: which redirected streams are also shown on the console, each line prefixed
            with its rank: ``"all"``, ``"out"``, ``"err"``, ``True`` (all) or ``False``.
        prefix: the console prefix of a rank's lines, ``{rank}`` its rank (default
            ``"[rank {rank}]: "`` for tee). Given, the streams that are not redirected are
            relayed through the parent with it too, whole lines at a time.
        ranks: only these ranks' output shows on the console (their logs keep everything).
        faulthandler: enable :mod:`faulthandler` in every worker, so a crash in native code
            leaves a Python traceback on the rank's stderr.
        max_restarts: when a rank fails, stop the job as usual, then start it again from
            scratch, up to this many times (as ``torchrun --max-restarts``). Each rank sees
            its attempt in ``TORCHELASTIC_RESTART_COUNT`` and ``SPAWNKIT_ATTEMPT`` (0 first),
            each attempt gets a new ``MASTER_PORT`` (unless the program set one) and, with
            ``log_dir``, its logs in ``log_dir/attempt_<k>/<rank>/``. ``timeout`` covers all
            attempts together; a timeout, ``terminate()`` or Ctrl-C never restarts.
        restart_delay: seconds between an attempt's end and the next one's start, or a
            callable ``restart -> seconds`` (1 for the first restart), such as
            ``lambda n: min(60, 2 ** n)`` for a backoff.
        no_restart_on: failures that end the job without a restart: an exception class or a
            tuple of them (matched against what the rank raised, or the failure itself:
            ``ProcessExitedException`` for exits and signals), or a callable
            ``failure -> bool`` that is true for them. It gets the attempt's root cause.
        **options: the backend's own options (see ``spawnkit backends``).

    Returns:
        With ``join=True``, the list of return values, index = rank. With ``join=False``,
        the running :class:`SpawnContext`.

    Raises:
        ProcessRaisedException: a rank raised (the original exception is its ``__cause__``).
        ProcessExitedException: a rank exited non-zero or was killed by a signal.
        SpawnTimeoutError: ``timeout`` passed before every rank finished.
        ConfigError: bad input, raised before any process starts (a subclass names it).

        A failure's ``report`` (:class:`JobReport`) names the root cause (the earliest
        failure), every other failed rank, the ranks spawnkit stopped and, after restarts,
        every earlier attempt. With restarts, what is raised is the last attempt's failure.

    Example::

        def work(rank, scale):
            return rank * scale

        if __name__ == "__main__":
            assert spawnkit.spawn(work, args=(10,), nprocs=4) == [0, 10, 20, 30]
    """
    ctx = start_job(
        fn,
        args,
        nprocs,
        join=join,
        daemon=daemon,
        backend=backend,
        watch=watch,
        grace_period=grace_period,
        start_method=start_method,
        env=env,
        timeout=timeout,
        log_dir=log_dir,
        redirect=redirect,
        tee=tee,
        prefix=prefix,
        ranks=ranks,
        faulthandler=faulthandler,
        options=options,
        restarts=RestartPolicy(max_restarts, restart_delay, no_restart_on),
    )
    if not join:
        return ctx
    return wait_in_foreground(ctx)


def start_job(
    fn: Callable[..., Any],
    args: Any,
    nprocs: int,
    *,
    join: bool,
    daemon: bool,
    backend: str | None,
    watch: str,
    grace_period: float | None,
    start_method: str | None,
    env: EnvOption,
    timeout: float | None,
    log_dir: str | os.PathLike[str] | None,
    redirect: str | bool | None,
    tee: str | bool,
    prefix: str | None,
    ranks: Iterable[int] | None,
    faulthandler: bool,
    options: dict[str, Any],
    restarts: RestartPolicy | None = None,
) -> ProcessContext:
    """:func:`spawn` up to the running job; ``join=True`` holds signals for
    :func:`wait_in_foreground`."""
    refuse_while_importing_main()
    _validate(fn, args, nprocs, grace_period)
    check_seconds("timeout", timeout)
    _refuse_ignored_sigchld()
    if not isinstance(watch, str):
        raise InvalidArgumentError(f"watch must be a watch name (str), not {watch!r}")
    registry = plugins()
    info = _backend_name(backend, start_method, registry)
    _check_options(info, options, registry)
    refuse_missing_main_file(info, registry)
    watch_info = registry.watch(watch, info)
    jobs = _jobs(info, fn, _rank_args(args, nprocs))
    policy = restarts or RestartPolicy()
    logs = _attempt_logs(log_dir, policy.max_restarts)

    def make(attempt: int) -> Attempt:
        envs = rank_envs(
            nprocs, env, local=not info.remote, attempt=attempt, max_restarts=policy.max_restarts
        )
        output = _output_plan(info, nprocs, logs(attempt), redirect, tee, prefix, ranks)
        return Attempt(create_backend(info, options, nprocs), envs, output)

    instance, envs, output = make(0)
    try:
        parent_watch = watch_info.factory()
    except BaseException:
        instance.close()
        raise
    grace = DEFAULT_GRACE if grace_period is None else float(grace_period)
    return launch(
        info.name,
        instance,
        parent_watch,
        jobs,
        grace,
        daemon,
        envs=envs,
        output=output,
        timeout=timeout,
        faulthandler=bool(faulthandler),
        local=not info.remote,
        deliver=not join,
        restarts=Restarts(policy, make) if policy.max_restarts else None,
    )


def _attempt_logs(log_dir: Any, max_restarts: int) -> Callable[[int], Any]:
    """Attempt ``k``'s ``log_dir``: ``log_dir`` itself, or its ``attempt_<k>`` with restarts."""
    if not max_restarts or not isinstance(log_dir, (str, os.PathLike)):
        return lambda attempt: log_dir  # (a wrong type is OutputPlan's to reject)
    base = os.path.abspath(os.fspath(log_dir))  # where it is now, whatever cwd becomes
    return lambda attempt: os.path.join(base, f"attempt_{attempt}")


def wait_in_foreground(
    ctx: ProcessContext, tick: Callable[[], None] | None = None, every: float = 0.25
) -> list[Any]:
    """Wait for a job started with ``join=True`` and return its results.

    SIGINT and SIGTERM stop the job first (see ``foreground``); ``tick`` is called every
    ``every`` seconds while it runs (``spawnkit run``'s status line).
    """
    try:
        with foreground(ctx):
            # Signals were held since the ranks started; now the foreground's handlers are
            # in place, so a SIGINT or SIGTERM that came meanwhile stops the job first.
            ctx.unhold()
            if tick is not None:
                while not ctx.join(timeout=every):
                    tick()
            return ctx.results()
    except BaseException:
        # Whatever ends the wait (a failure, a timeout signal of the program's, a bug), the
        # workers do not outlive it. A no-op when the job already ended.
        ctx.terminate()
        raise
    finally:
        ctx.unhold()  # if the foreground could not start


def start_processes(
    fn: Callable[..., Any],
    args: Sequence[Any] | Callable[[int], Sequence[Any]] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    start_method: str | None = "spawn",
    **options: Any,
) -> list[Any] | ProcessContext:
    """``torch.multiprocessing.start_processes``: :func:`spawn` with ``start_method`` as backend.

    ``start_method=None`` means what it means to ``multiprocessing.get_context(None)``, as
    under torch: the platform's default start method (fork on Linux before Python 3.14).
    """
    if start_method is None:
        import multiprocessing

        start_method = multiprocessing.get_context().get_start_method()
    return spawn(fn, args, nprocs, join, daemon, backend=start_method, **options)
