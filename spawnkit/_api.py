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
    UnknownOptionError,
)
from ._pickling import PickledJob, dumps_job
from ._registry import BackendInfo, plugins
from ._signals.foreground import foreground

if TYPE_CHECKING:
    from types import FrameType

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


def _payload(info: BackendInfo, fn: Callable[..., Any], args: tuple[Any, ...]) -> PickledJob:
    try:
        job = dumps_job((fn, args), remote=info.remote)
    except Exception as whole:
        culprit, error, found = "fn", whole, fn
        for label, obj in [("fn", fn), *((f"args[{i}]", a) for i, a in enumerate(args))]:
            try:
                dumps_job(obj, remote=info.remote)
            except Exception as exc:  # noqa: BLE001
                culprit, error, found = f"{label} {_describe(obj)}", exc, obj
                break
        raise NotPicklableError(
            f"cannot pickle {culprit} for backend {info.name!r}: {error}. Backend "
            f"{info.name!r} sends fn and args to a new interpreter, so they must be picklable"
            f"{_fixes(by_value=_is_code(found))}"
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


def _fixes(*, by_value: bool) -> str:
    fixes = []
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


def _refuse_while_importing_main() -> None:
    """A worker importing the parent's script must not start a job of its own.

    Backends that start a new interpreter import the parent's main module there (as
    ``__mp_main__``) to find its functions. Without an ``if __name__ == "__main__":`` guard,
    the script's call to ``spawn`` runs again in every worker, which would start workers
    without end.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__"
    ):
        frame = frame.f_back
    if frame is None:
        return
    where = frame.f_globals.get("__file__") or "the main module"
    message = (
        f"spawnkit.spawn() was called while this worker imported the parent's main module "
        f"({where}) to find the job's function; without a guard the job would start again "
        "in every worker. Put the code that starts the job under "
        "`if __name__ == \"__main__\":`, or use backend='fork'"
    )
    worker = sys.modules.get("spawnkit._worker")
    if worker is not None and worker.reporting_ready():
        raise ConfigError(message)
    # Still in the backend's own start-up (multiprocessing's): nothing of spawnkit's can
    # report yet, so say it on stderr and end with the status the parent recognises.
    from ._wire import NO_MAIN_GUARD_STATUS

    sys.stderr.write(f"spawnkit: error: {message}\n")
    sys.stderr.flush()
    os._exit(NO_MAIN_GUARD_STATUS)


def _refuse_ignored_sigchld() -> None:
    if hasattr(signal, "SIGCHLD") and signal.getsignal(signal.SIGCHLD) is signal.SIG_IGN:
        raise ConfigError(
            "SIGCHLD is ignored in this process (signal.SIG_IGN), so the system discards "
            "every child's exit status and spawnkit could not tell a failed rank from a "
            "successful one; restore the default before starting a job: "
            "signal.signal(signal.SIGCHLD, signal.SIG_DFL)"
        )


def _validate(fn: object, args: object, nprocs: object, grace_period: object) -> None:
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


@overload
def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: Literal[True] = True,
    daemon: bool = False,
    backend: str | None = None,
    *,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    **options: Any,
) -> list[Any]: ...


@overload
def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    *,
    join: Literal[False],
    daemon: bool = False,
    backend: str | None = None,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    **options: Any,
) -> ProcessContext: ...


@overload
def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    backend: str | None = None,
    *,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    **options: Any,
) -> list[Any] | ProcessContext: ...


def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    backend: str | None = None,
    *,
    watch: str = "auto",
    grace_period: float | None = DEFAULT_GRACE,
    start_method: str | None = None,
    **options: Any,
) -> list[Any] | ProcessContext:
    """Run ``fn(rank, *args)`` in ``nprocs`` worker processes, as one job.

    A drop-in for ``torch.multiprocessing.spawn`` that does not need torch.

    Args:
        fn: a callable taking the rank first. Backends that start a new interpreter need it
            picklable: a function at module level of an importable module.
        args: extra positional arguments for every rank.
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
        **options: the backend's own options (see ``spawnkit backends``).

    Returns:
        With ``join=True``, the list of return values, index = rank. With ``join=False``,
        the running :class:`SpawnContext`.

    Raises:
        ProcessRaisedException: a rank raised (the original exception is its ``__cause__``).
        ProcessExitedException: a rank exited non-zero or was killed by a signal.
        ConfigError: bad input, raised before any process starts (a subclass names it).

    Example::

        def work(rank, scale):
            return rank * scale

        if __name__ == "__main__":
            assert spawnkit.spawn(work, args=(10,), nprocs=4) == [0, 10, 20, 30]
    """
    _refuse_while_importing_main()
    _validate(fn, args, nprocs, grace_period)
    _refuse_ignored_sigchld()
    args = tuple(args)
    if start_method is not None:
        if backend is not None and backend != start_method:
            raise ConfigError(
                f"backend={backend!r} and start_method={start_method!r} disagree; "
                "start_method is torch's name for backend: pass one of them"
            )
        backend = start_method
    if backend is None:
        backend = os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise InvalidArgumentError(f"backend must be a backend name (str), not {backend!r}")
    if not isinstance(watch, str):
        raise InvalidArgumentError(f"watch must be a watch name (str), not {watch!r}")
    registry = plugins()
    info = registry.backend(backend)
    unknown = sorted(set(options) - info.options)
    if unknown:
        accepted = ", ".join(sorted(info.options)) or "none"
        raise UnknownOptionError(
            f"backend {info.name!r} does not take option(s) {', '.join(unknown)}; "
            f"it accepts: {accepted}"
        )
    watch_info = registry.watch(watch, info)
    job = _payload(info, fn, args) if info.pickles else None
    target = None if info.pickles else (fn, args)
    instance = info.factory(**options, **({"nprocs": nprocs} if info.pass_nprocs else {}))
    try:
        parent_watch = watch_info.factory()
    except BaseException:
        instance.close()
        raise
    grace = DEFAULT_GRACE if grace_period is None else float(grace_period)
    # A new interpreter gets the descriptors the pickled job refers to; a fork worker
    # keeps the program's files anyway.
    carried = job.fds if job is not None else ()
    payload = job.data if job is not None else None
    ctx = launch(
        info.name,
        instance,
        parent_watch,
        nprocs,
        payload,
        target,
        grace,
        daemon,
        carried,
        local=not info.remote,
        deliver=not join,
    )
    if not join:
        return ctx
    try:
        with foreground(ctx):
            # Signals were held since the ranks started; now the foreground's handlers are
            # in place, so a SIGINT or SIGTERM that came meanwhile stops the job first.
            ctx.unhold()
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
    args: Sequence[Any] = (),
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
