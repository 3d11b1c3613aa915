"""The public entry points: ``spawn``, ``start_processes`` and the listings."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

from ._context import ProcessContext, check_seconds, launch
from ._errors import (
    ConfigError,
    InvalidArgumentError,
    NotPicklableError,
    UnknownOptionError,
)
from ._registry import BackendInfo, plugins
from ._signals import foreground

__all__ = ["available_backends", "available_watches", "spawn", "start_processes"]

BACKEND_ENV = "SPAWNKIT_BACKEND"
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


def _payload(info: BackendInfo, fn: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    try:
        return pickle.dumps((fn, args))
    except Exception as whole:
        culprit, error = "fn", whole
        for label, obj in [("fn", fn), *((f"args[{i}]", a) for i, a in enumerate(args))]:
            try:
                pickle.dumps(obj)
            except Exception as exc:  # noqa: BLE001
                culprit, error = f"{label} {_describe(obj)}", exc
                break
        in_memory = sorted(
            name for name, b in plugins().backends.items() if b.available and not b.pickles
        )
        fix = (
            f", or use a backend that does not pickle: {', '.join(map(repr, in_memory))}"
            if in_memory
            else ""
        )
        raise NotPicklableError(
            f"cannot pickle {culprit} for backend {info.name!r}: {error}. Backend "
            f"{info.name!r} sends fn and args to a new interpreter, so they must be picklable: "
            "define functions at module level of an importable module (not a lambda, a nested "
            f"function or a class defined inside one){fix}"
        ) from whole


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
    _validate(fn, args, nprocs, grace_period)
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
    watch_info = registry.watch(watch)
    payload = _payload(info, fn, args) if info.pickles else None
    target = None if info.pickles else (fn, args)
    instance = info.factory(**options)
    try:
        parent_watch = watch_info.factory()
    except BaseException:
        instance.close()
        raise
    grace = DEFAULT_GRACE if grace_period is None else float(grace_period)
    ctx = launch(info.name, instance, parent_watch, nprocs, payload, target, grace, daemon)
    if not join:
        return ctx
    try:
        with foreground(ctx):
            return ctx.results()
    except BaseException:
        # Whatever ends the wait (a failure, a timeout signal of the program's, a bug), the
        # workers do not outlive it. A no-op when the job already ended.
        ctx.terminate()
        raise


def start_processes(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    start_method: str = "spawn",
    **options: Any,
) -> list[Any] | ProcessContext:
    """``torch.multiprocessing.start_processes``: :func:`spawn` with ``start_method`` as backend."""
    return spawn(fn, args, nprocs, join, daemon, backend=start_method, **options)
