"""Finds backends and parent watches through pluggy, once, and answers lookups by name."""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import threading
import traceback
import types
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, final

import pluggy

from . import hookspecs
from ._errors import (
    BackendUnavailableError,
    PluginError,
    SpawnError,
    UnknownBackendError,
    UnknownWatchError,
    WatchUnavailableError,
)
from .hookspecs import (
    PROJECT,
    BackendInfo,
    BackendRegistry,
    WatchInfo,
    WatchRegistry,
    _dist,
    _Registry,
)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from ._protocols import Backend

__all__ = [
    "BackendInfo",
    "BackendRegistry",
    "BrokenPlugin",
    "Conflict",
    "Plugins",
    "WatchInfo",
    "WatchRegistry",
    "plugins",
]

DISABLE_ENV = "SPAWNKIT_DISABLE_PLUGINS"
_CORE = PROJECT


@final
@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded or whose hook failed; the others still work.

    ``filename`` and ``lineno`` point at the plugin's own line that failed (or led to the
    failure), or at the offending hook's definition.
    """

    name: str
    distribution: str | None
    error: str
    filename: str | None = None
    lineno: int | None = None

    def __str__(self) -> str:
        where = f" at {self.filename}:{self.lineno}" if self.filename else ""
        return f"plugin {self.name!r} from {_dist(self.distribution)} failed{where}: {self.error}"


@final
@dataclass(frozen=True)
class Conflict:
    """A backend or watch name that more than one plugin registered.

    Every claimant stays reachable as ``<distribution>:<name>``. When one of them is spawnkit
    itself, its built-in keeps the plain name; otherwise the plain name raises
    :class:`PluginError` until all but one plugin are gone.
    """

    kind: str  # "backend" or "watch"
    name: str
    # (distribution, entry point) of each plugin that registered the name
    claimants: tuple[tuple[str | None, str], ...]

    @property
    def builtin_kept(self) -> bool:
        """Whether spawnkit's own entry keeps the plain name."""
        return [d for d, _ in self.claimants].count(_CORE) == 1

    @property
    def qualified(self) -> list[str]:
        """``<distribution>:<name>`` of each claimant that the distribution tells apart."""
        dists = [d for d, _ in self.claimants]
        return [f"{d}:{self.name}" for d in dists if d is not None and dists.count(d) == 1]

    def __str__(self) -> str:
        dists = " and ".join(repr(d) for d, _ in self.claimants)
        text = f"{self.kind} {self.name!r} is registered by {dists}"
        if not self.builtin_kept:
            return f"{text}; pick one by its full name: {_either(self.qualified)}"
        others = _either(q for q in self.qualified if q != f"{_CORE}:{self.name}")
        return f"{text}; {self.name!r} stays spawnkit's own, reach the plugin's as {others}"


def _either(names: Iterable[str]) -> str:
    return " or ".join(repr(n) for n in names) or "none"


def _quote(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none"


def _suggest(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _settle(registry: _Registry, store: dict[str, Any], conflicts: list[Conflict]) -> None:
    """Put each name in ``store``; a name with several claimants becomes a conflict."""
    for name, claimed in registry._claims.items():
        if len(claimed) == 1:
            store[name] = claimed[0][2]
            continue
        # spawnkit's own first, then in entry-point order, whatever order pluggy called in
        claims = sorted(claimed, key=lambda c: (c[0] != _CORE, c[1], c[0] or ""))
        conflict = Conflict(registry._kind, name, tuple((d, p) for d, p, _ in claims))
        conflicts.append(conflict)
        for distribution, _, entry in claims:
            qualified = f"{distribution}:{name}"
            if qualified in conflict.qualified:
                store[qualified] = replace(entry, name=qualified)
            if distribution == _CORE and conflict.builtin_kept:
                store[name] = entry


_Info = TypeVar("_Info", BackendInfo, WatchInfo)


def _lookup(store: Mapping[str, _Info], name: str) -> _Info | None:
    """``store[name]``, where ``<distribution>:<name>`` also finds an unclashing ``name``."""
    info = store.get(name)
    if info is None:
        distribution, qualified, plain = name.partition(":")
        info = store.get(plain) if qualified else None
        if info is not None and info.distribution != distribution:
            return None
    return info


@final
@dataclass
class Plugins:
    """Everything the plugins registered, loaded once per process."""

    backends: dict[str, BackendInfo] = field(default_factory=dict)
    watches: dict[str, WatchInfo] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    # the installed entry points SPAWNKIT_DISABLE_PLUGINS blocked
    disabled: tuple[str, ...] = ()

    def _broken_note(self) -> str:
        if not self.broken:
            return ""
        return "; " + "; ".join(str(b) for b in self.broken)

    def _check_conflict(self, kind: str, name: str) -> None:
        for conflict in self.conflicts:
            if conflict.kind == kind and conflict.name == name and not conflict.builtin_kept:
                claimants = (f"entry point {p!r} of {_dist(d)}" for d, p in conflict.claimants)
                raise PluginError(
                    f"{kind} {name!r} is registered by more than one plugin: "
                    f"{' and '.join(claimants)}; pick one by its full name "
                    f"({_either(conflict.qualified)}), uninstall one of them or block one with "
                    f"{DISABLE_ENV}=<entry point>"
                )

    def _unknown(self, kind: str, name: str, names: Iterable[str], installed: str) -> str:
        if name in self.disabled:
            return (
                f"{kind} {name!r} is disabled by {DISABLE_ENV}={','.join(self.disabled)}; "
                f"take {name!r} out of it to use the {kind}; installed: {installed}"
                f"{self._broken_note()}"
            )
        return (
            f"unknown {kind} {name!r}{_suggest(name, names)}; installed: {installed}"
            f"{self._broken_note()}"
        )

    def backend(self, name: str) -> BackendInfo:
        """The backend called ``name``, usable here; raises a clear error otherwise.

        ``<distribution>:<name>`` picks the backend ``name`` of that distribution.
        """
        self._check_conflict("backend", name)
        info = _lookup(self.backends, name)
        if info is None:
            raise UnknownBackendError(
                self._unknown("backend", name, self.backends, _quote(self.backends))
            )
        if info.unavailable is not None:
            usable = [n for n, b in self.backends.items() if b.available]
            raise BackendUnavailableError(
                f"backend {name!r} cannot run here: {info.unavailable}; "
                f"available: {_quote(usable)}",
                backend=name,
                reason=info.unavailable,
            )
        return info

    def watch(self, name: str, backend: BackendInfo | None = None) -> WatchInfo:
        """The watch called ``name`` (``"auto"``: the best available), usable here.

        With ``backend``, only a watch that applies to its workers: ``auto`` picks among
        those (``none`` for a backend that ends its workers itself), and a watch named
        outside them raises :class:`WatchUnavailableError`.
        """
        if backend is not None and not backend.allows_watch(name):
            if name != "auto":
                self.watch(name)  # an unknown or unavailable name says so first
                raise WatchUnavailableError(_not_for(backend, name), parameter="watch")
            allowed = [
                w for n, w in self.watches.items() if w.available and backend.allows_watch(n)
            ]
            if not allowed:
                raise WatchUnavailableError(_not_for(backend, name))
            return max(allowed, key=lambda w: w.priority)
        if name == "auto":
            candidates = [w for w in self.watches.values() if w.available]
            if not candidates:
                raise WatchUnavailableError(
                    f"no parent watch can run here; registered: {_quote(self.watches)}"
                )
            return max(candidates, key=lambda w: w.priority)
        self._check_conflict("watch", name)
        info = _lookup(self.watches, name)
        if info is None:
            raise UnknownWatchError(
                self._unknown("watch", name, self.watches, f"'auto', {_quote(self.watches)}")
            )
        if info.unavailable is not None:
            usable = [n for n, w in self.watches.items() if w.available]
            raise WatchUnavailableError(
                f"watch {name!r} cannot run here: {info.unavailable}; "
                f"available: 'auto', {_quote(usable)}"
            )
        return info


def _not_for(backend: BackendInfo, name: str) -> str:
    if backend.own_fate_sharing:
        why = "it ends its own workers when the job's process dies"
        fix = "leave watch='auto' (or pass watch='none')"
    elif isinstance(backend.watches, tuple):
        why = f"only {_quote(backend.watches)} can guard its workers"
        fix = "pass one of those, or leave watch='auto'"
    else:
        why = "its workers are not processes of this machine, which a watch could follow"
        fix = "leave watch='auto' (or pass watch='none')"
    return f"watch {name!r} does not apply to backend {backend.name!r}: {why}; {fix}"


def create_backend(info: BackendInfo, options: Mapping[str, Any], nprocs: int) -> Backend:
    """What ``info``'s factory makes for a job of ``nprocs`` ranks.

    A :class:`SpawnError` from the factory is its verdict on the options and passes as it is;
    anything else it raises, or a result that is no backend, is the plugin's fault and becomes
    a :class:`PluginError` that names the backend and its distribution.
    """
    broken = f"backend {info.name!r} from {_dist(info.distribution)} is broken"
    fix = (
        "report it to the plugin's authors, or pick another backend ('spawnkit backends "
        "--check' tries each one)"
    )
    try:
        backend = info.factory(**options, **({"nprocs": nprocs} if info.pass_nprocs else {}))
    except SpawnError:
        raise
    except Exception as exc:
        raise PluginError(f"{broken}: its factory raised {exc!r}; {fix}") from exc
    if not all(callable(getattr(backend, method, None)) for method in ("start", "close")):
        raise PluginError(
            f"{broken}: its factory returned {backend!r}, which is no spawnkit.Backend (one has "
            f"start() and close()); {fix}"
        )
    return backend


def _entry_points() -> dict[str, list[tuple[EntryPoint, str]]]:
    """Each entry point name of the ``spawnkit`` group, in the order pluggy's loader meets them,
    with ``(entry point, distribution name)`` of each distribution that has it, in that order
    too."""
    from importlib.metadata import distributions

    found: dict[str, list[tuple[EntryPoint, str]]] = {}
    for dist in distributions():
        ours = [ep for ep in dist.entry_points if ep.group == _CORE]
        name = dist.metadata["Name"] if ours else ""  # parsed once: it takes a while
        for ep in ours:
            claims = found.setdefault(ep.name, [])
            if name not in [d for _, d in claims]:  # not one installed twice on sys.path
                claims.append((ep, name))
    return found


def _disabled(known: Iterable[str]) -> tuple[str, ...]:
    """The installed entry points ``SPAWNKIT_DISABLE_PLUGINS`` names; warns of any other name."""
    entry_points = sorted(set(known))
    names = os.environ.get(DISABLE_ENV, "").split(",")
    disabled = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    for name in disabled:
        if name not in entry_points:
            warnings.warn(
                f"{DISABLE_ENV} names {name!r}, which is no installed plugin's entry point"
                f"{_suggest(name, entry_points)}, so it disables nothing; the entry points "
                f"are {_quote(entry_points)}",
                UserWarning,
                # Plugins load lazily, in whichever call first needs them: no caller's line
                # would say more than this one.
                stacklevel=1,
            )
    return tuple(name for name in disabled if name in entry_points)


def _failed_at(exc: BaseException, ep: EntryPoint) -> tuple[str | None, int | None]:
    """Where ``exc`` happened: the innermost line of the plugin's own package (its line that
    led into a library or into spawnkit), else the innermost line of all."""
    if isinstance(exc, SyntaxError) and exc.filename:  # its traceback ends in the import system
        return exc.filename, exc.lineno
    package = ep.value.partition(".")[0].partition(":")[0].strip()
    frames = list(traceback.walk_tb(exc.__traceback__))
    own = [(f, n) for f, n in frames if f.f_globals.get("__name__", "").split(".")[0] == package]
    if not frames:
        return None, None
    frame, lineno = (own or frames)[-1]
    return frame.f_code.co_filename, lineno


def _defined_at(function: object) -> tuple[str | None, int | None]:
    if callable(function):
        function = inspect.unwrap(function)
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    if not isinstance(code, types.CodeType):
        return None, None
    return code.co_filename, code.co_firstlineno


def _hook_in(pm: pluggy.PluginManager, plugin: object, message: str) -> tuple[str, object]:
    """The hook name and function of ``plugin`` that pluggy's ``message`` is about (it quotes
    the hook's name)."""
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        hook = opts and (opts.get("specname") or attr)
        if hook and repr(hook) in message:
            return hook, getattr(plugin, attr)
    return "", None


def _load_entry_points(
    pm: pluggy.PluginManager, entries: Mapping[str, list[tuple[EntryPoint, str]]]
) -> list[BrokenPlugin]:
    """Load every entry point through pluggy, which checks its hooks against the specs; what
    is wrong with each one that fails."""
    specs = {n: c.spec.argnames for n, c in vars(pm.hook).items() if c.spec is not None}
    known = ", ".join(f"{hook}({', '.join(args)})" for hook, args in specs.items())
    broken: list[BrokenPlugin] = []

    def report(name: str, error: str, where: tuple[str | None, int | None] = (None, None)) -> None:
        distribution = entries[name][0][1] if name in entries else None
        broken.append(BrokenPlugin(name, distribution, error, *where))

    def invalid(exc: pluggy.PluginValidationError) -> tuple[str, tuple[str | None, int | None]]:
        hook, function = _hook_in(pm, exc.plugin, str(exc))
        error = "; ".join(str(exc).splitlines()) + ("" if hook in specs else _suggest(hook, specs))
        return f"{error}; the hooks spawnkit knows are {known}", _defined_at(function)

    # One pass reads every installed distribution, so all plugins load in one. Pluggy's loader
    # stops at the first entry point that fails: the first one it has not loaded, as it meets
    # them in the order of `entries`. That one is reported and blocked, and the pass resumed.
    while True:
        try:
            pm.load_setuptools_entrypoints(_CORE)
            break
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the others
            name = _failing(pm, exc, entries)
            if name is None:  # the installed distributions changed while they loaded
                broken.append(BrokenPlugin("?", None, f"loading the plugins failed: {exc!r}"))
                break
            pm.set_blocked(name)  # unregisters what pluggy registered of it
            if isinstance(exc, pluggy.PluginValidationError):
                report(name, *invalid(exc))
            elif isinstance(exc, ValueError) and _raised_in(exc, pluggy.PluginManager.register):
                # pluggy's refusal of an object that it has under another name
                other = pm.get_name(entries[name][0][0].load())
                error = f"its entry point names the object of plugin {other!r} again"
                report(name, f"{error}; keep one of the two entry points")
            else:
                # The repr as Pythons before 3.15 spell it; 3.15's adds an ImportError's
                # name= and path=, which repeat what the message says.
                error = f"{type(exc).__name__}({', '.join(map(repr, exc.args))})"
                report(name, f"import failed: {error}", _failed_at(exc, entries[name][0][0]))
    while True:  # a hook with no spec, which pluggy finds only now
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or "?"
            pm.unregister(exc.plugin)
            report(name, *invalid(exc))
    for name, plugin in pm.list_name_plugin():
        unmarked = [  # what pluggy cannot see: a hook function that its author forgot to mark
            hook
            for hook in specs
            if plugin is not None
            and callable(inspect.getattr_static(plugin, hook, None))
            and pm.parse_hookimpl_opts(plugin, hook) is None
            and getattr(plugin, hook) is not getattr(hookspecs, hook)
        ]
        if unmarked:
            pm.unregister(plugin)
            error = f"its function {unmarked[0]} is not marked as a hook, so spawnkit would never"
            where = _defined_at(getattr(plugin, unmarked[0]))
            report(name, f"{error} call it; mark it with @spawnkit.hookimpl", where)
    return broken


def _failing(pm: pluggy.PluginManager, exc: Exception, entries: Iterable[str]) -> str | None:
    """The entry point that ``exc`` stopped pluggy's loader at."""
    if isinstance(exc, pluggy.PluginValidationError):
        name = pm.get_name(exc.plugin)  # registered in part by pluggy < 1.7
        if name is not None:
            return name
    return next((n for n in entries if not (pm.has_plugin(n) or pm.is_blocked(n))), None)


def _raised_in(exc: BaseException, function: Callable[..., Any]) -> bool:
    return list(traceback.walk_tb(exc.__traceback__))[-1][0].f_code is function.__code__


class _StandIn:
    """Holds a plugin's guarded hooks; equal only to itself, as pluggy expects of a plugin."""


def _guarded(
    pm: pluggy.PluginManager,
    plugin: object,
    name: str,
    ep: EntryPoint,
    distribution: str,
    report: Callable[[BrokenPlugin], None],
) -> object:
    """What pluggy calls in place of ``plugin``: its hooks with their own options (so in the
    same order), each handed a registry that credits the plugin, and reporting what it raises
    instead of ending the hook call for every plugin."""

    def credit(arg: Any) -> Any:
        return arg._on_behalf_of(distribution, name) if isinstance(arg, _Registry) else arg

    def fail(exc: BaseException, hook: str, function: object) -> None:
        filename, lineno = _failed_at(exc, ep)
        if filename is None:
            filename, lineno = _defined_at(function)
        report(BrokenPlugin(name, distribution, f"{hook}: {exc!r}", filename, lineno))

    stand_in = _StandIn()
    impls = [(c.name, i) for c in pm.get_hookcallers(plugin) or () for i in c.get_hookimpls()]
    for n, (hook, impl) in enumerate((h, i) for h, i in impls if i.plugin is plugin):
        failed = functools.partial(fail, hook=hook, function=impl.function)
        guard = _guard(impl.function, impl.wrapper or impl.hookwrapper, credit, failed)
        options = {"tryfirst": impl.tryfirst, "trylast": impl.trylast, "wrapper": impl.wrapper}
        options.update(hookwrapper=impl.hookwrapper, optionalhook=impl.optionalhook)
        setattr(stand_in, f"hook{n:03}", hookspecs.hookimpl(guard, specname=hook, **options))
    return stand_in


def _guard(
    function: Callable[..., Any],
    wrapper: bool,
    credit: Callable[[Any], Any],
    fail: Callable[[BaseException], None],
) -> Callable[..., Any]:
    if not wrapper:

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*map(credit, args), **kwargs)
            except Exception as exc:  # noqa: BLE001 - reported; the other hooks still run
                fail(exc)
                return None

        return call

    @functools.wraps(function)
    def wrap(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        # Either wrapper style: the code before its yield, the wrapped hooks, the code after.
        # A part that fails is reported; the result passes through unchanged.
        inner = function(*map(credit, args), **kwargs)
        try:
            next(inner)
        except Exception as exc:  # noqa: BLE001 - reported; the wrapped hooks still run
            returned = isinstance(exc, StopIteration)
            fail(RuntimeError("the wrapper returned without yielding") if returned else exc)
            return (yield)
        sent = yield  # what ends the whole call (KeyboardInterrupt) closes `inner` too
        try:
            inner.send(sent)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:  # noqa: BLE001 - reported; the result stands
            fail(exc)
            return sent
        inner.close()
        fail(RuntimeError("the wrapper yielded a second time"))
        return sent

    return wrap


def _load() -> Plugins:
    entries = _entry_points()
    result = Plugins(disabled=_disabled(entries))
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in result.disabled:
        pm.set_blocked(name)
    for name, (_, *shadowed) in entries.items():
        if pm.is_blocked(name):
            continue
        for _, other in shadowed:
            error = f"distribution {entries[name][0][1]!r} has an entry point {name!r} too"
            error += "; only one loads: rename one of them"
            result.broken.append(BrokenPlugin(name, other, error))
    result.broken.extend(_load_entry_points(pm, entries))
    result.broken.sort(key=lambda broken: broken.name)  # stable: each name's in order
    # Swapped for stand-ins only now, so that pluggy refused one object under two names; in
    # the order of their names, so that the hooks' order (pluggy's, by tryfirst, trylast,
    # wrappers, then the latest registered first) does not hang on the order of sys.path.
    # Pluggy calls each hook once over all plugins.
    for name in sorted(entries):
        plugin = pm.get_plugin(name)
        if plugin is not None:  # loaded and not blocked
            (ep, distribution), *_ = entries[name]
            stand_in = _guarded(pm, plugin, name, ep, distribution, result.broken.append)
            pm.unregister(plugin)
            pm.register(stand_in, name)
    backends, watches = BackendRegistry(), WatchRegistry()
    pm.hook.spawnkit_register_backends(registry=backends)
    pm.hook.spawnkit_register_watches(registry=watches)
    _settle(backends, result.backends, result.conflicts)
    _settle(watches, result.watches, result.conflicts)
    return result


_lock = threading.Lock()
_loaded: Plugins | None = None


def plugins() -> Plugins:
    """The registry, loading every plugin on first use."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def describe(info: BackendInfo | WatchInfo) -> Mapping[str, str]:
    """A row for ``spawnkit backends`` / ``spawnkit watches``."""
    return {
        "name": info.name,
        "status": "available" if info.available else f"unavailable: {info.unavailable}",
        "distribution": info.distribution or "?",
        "description": info.description,
    }
