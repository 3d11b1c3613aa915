"""Finds backends and parent watches through pluggy, once, and answers lookups by name."""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

from ._errors import (
    BackendUnavailableError,
    PluginError,
    UnknownBackendError,
    UnknownWatchError,
    WatchUnavailableError,
)

if TYPE_CHECKING:
    import pluggy

    from ._protocols import Backend, ParentWatch

__all__ = [
    "BackendInfo",
    "BackendRegistry",
    "BrokenPlugin",
    "Plugins",
    "WatchInfo",
    "WatchRegistry",
    "plugins",
]

DISABLE_ENV = "SPAWNKIT_DISABLE_PLUGINS"
_CORE = "spawnkit"


@final
@dataclass(frozen=True)
class BackendInfo:
    """One registered backend, as ``spawnkit backends`` lists it."""

    name: str
    factory: Callable[..., Backend]
    options: frozenset[str]
    pickles: bool
    unavailable: str | None
    description: str
    distribution: str | None

    @property
    def available(self) -> bool:
        return self.unavailable is None


@final
@dataclass(frozen=True)
class WatchInfo:
    """One registered parent watch."""

    name: str
    factory: Callable[[], ParentWatch]
    priority: int
    unavailable: str | None
    description: str
    distribution: str | None

    @property
    def available(self) -> bool:
        return self.unavailable is None


@final
@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded or whose hook failed; the others still work."""

    name: str
    distribution: str | None
    error: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} from {_dist(self.distribution)} failed: {self.error}"


def _dist(distribution: str | None) -> str:
    return f"distribution {distribution!r}" if distribution else "an unknown distribution"


class _Registry:
    _kind = ""

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}
        # name -> (distribution, plugin name) of every plugin that registered it
        self._owners: dict[str, list[tuple[str | None, str]]] = {}
        self._distribution: str | None = None
        self._plugin = ""

    def _add(self, name: str, entry: Any) -> None:
        if not isinstance(name, str) or not name or name == "auto":
            raise PluginError(
                f"{self._kind} name {name!r} from {_dist(self._distribution)} is invalid; "
                "use a non-empty string other than 'auto'"
            )
        self._owners.setdefault(name, []).append((self._distribution, self._plugin))
        self._entries.setdefault(name, entry)

    def _conflicts(self) -> dict[str, list[tuple[str | None, str]]]:
        return {n: owners for n, owners in self._owners.items() if len(owners) > 1}


@final
class BackendRegistry(_Registry):
    """Handed to ``spawnkit_register_backends``; built-ins and plugins call the same ``add``."""

    _kind = "backend"

    def add(
        self,
        name: str,
        factory: Callable[..., Backend],
        *,
        options: Iterable[str] = (),
        pickles: bool = True,
        unavailable: str | None = None,
        description: str = "",
    ) -> None:
        """Register a backend.

        Args:
            name: what users pass as ``backend=``.
            factory: called as ``factory(**options)`` once per job; returns a
                :class:`spawnkit.Backend`. Import heavy modules inside it, not at plugin load.
            options: the keyword options the factory accepts; anything else a user passes
                is rejected before any process starts.
            pickles: whether ``fn`` and ``args`` travel pickled (``False`` only for
                backends that hand the objects over in memory, like ``fork``).
            unavailable: why the backend cannot run here, or ``None`` if it can.
            description: one line for ``spawnkit backends``.
        """
        self._add(
            name,
            BackendInfo(
                name=name,
                factory=factory,
                options=frozenset(options),
                pickles=pickles,
                unavailable=unavailable,
                description=description,
                distribution=self._distribution,
            ),
        )


@final
class WatchRegistry(_Registry):
    """Handed to ``spawnkit_register_watches``."""

    _kind = "watch"

    def add(
        self,
        name: str,
        factory: Callable[[], ParentWatch],
        *,
        priority: int = 0,
        unavailable: str | None = None,
        description: str = "",
    ) -> None:
        """Register a parent watch.

        Args:
            name: what users pass as ``watch=``.
            factory: called once per job in the parent; returns a :class:`spawnkit.ParentWatch`.
            priority: ``watch="auto"`` picks the available watch with the highest priority.
            unavailable: why the watch cannot run here, or ``None`` if it can.
            description: one line for ``spawnkit watches``.
        """
        self._add(
            name,
            WatchInfo(
                name=name,
                factory=factory,
                priority=priority,
                unavailable=unavailable,
                description=description,
                distribution=self._distribution,
            ),
        )


def _quote(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none"


def _suggest(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@final
@dataclass
class Plugins:
    """Everything the plugins registered, loaded once per process."""

    backends: dict[str, BackendInfo] = field(default_factory=dict)
    watches: dict[str, WatchInfo] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    # "backend:name" / "watch:name" -> (distribution, plugin name) of each claimant
    conflicts: dict[str, list[tuple[str | None, str]]] = field(default_factory=dict)

    def _broken_note(self) -> str:
        if not self.broken:
            return ""
        return "; " + "; ".join(str(b) for b in self.broken)

    def _check_conflict(self, kind: str, name: str) -> None:
        owners = self.conflicts.get(f"{kind}:{name}")
        if owners:
            raise PluginError(
                f"{kind} {name!r} is registered by more than one plugin: "
                + " and ".join(f"entry point {p!r} of {_dist(d)}" for d, p in owners)
                + f"; uninstall one of them or block one with {DISABLE_ENV}=<entry point>"
            )

    def backend(self, name: str) -> BackendInfo:
        """The backend called ``name``, usable here; raises a clear error otherwise."""
        self._check_conflict("backend", name)
        info = self.backends.get(name)
        if info is None:
            raise UnknownBackendError(
                f"unknown backend {name!r}{_suggest(name, self.backends)}; "
                f"installed: {_quote(self.backends)}{self._broken_note()}"
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

    def watch(self, name: str) -> WatchInfo:
        """The watch called ``name`` (``"auto"``: the best available), usable here."""
        if name == "auto":
            candidates = [w for w in self.watches.values() if w.available]
            if not candidates:
                raise WatchUnavailableError(
                    f"no parent watch can run here; registered: {_quote(self.watches)}"
                )
            return max(candidates, key=lambda w: w.priority)
        self._check_conflict("watch", name)
        info = self.watches.get(name)
        if info is None:
            raise UnknownWatchError(
                f"unknown watch {name!r}{_suggest(name, self.watches)}; "
                f"installed: 'auto', {_quote(self.watches)}{self._broken_note()}"
            )
        if info.unavailable is not None:
            usable = [n for n, w in self.watches.items() if w.available]
            raise WatchUnavailableError(
                f"watch {name!r} cannot run here: {info.unavailable}; "
                f"available: 'auto', {_quote(usable)}"
            )
        return info


def _entry_points() -> list[tuple[str, str | None, Any]]:
    """``(name, distribution, entry point)`` for the ``spawnkit`` group, one per name+dist."""
    from importlib.metadata import distributions

    found: dict[tuple[str, str | None], Any] = {}
    for dist in distributions():
        dist_name = dist.metadata["Name"]
        for ep in dist.entry_points:
            if ep.group == _CORE:
                found.setdefault((ep.name, dist_name), ep)
    return [(name, dist, ep) for (name, dist), ep in sorted(found.items(), key=lambda kv: kv[0][0])]


def _expected(pm: pluggy.PluginManager, hook_name: str) -> str:
    caller = getattr(pm.hook, hook_name, None)
    if caller is None or caller.spec is None:
        hooks = [n for n in dir(pm.hook) if n.startswith("spawnkit_")]
        return f"a hook named one of {_quote(hooks)}"
    return f"{hook_name}({', '.join(caller.spec.argnames)})"


def _mismatch(pm: pluggy.PluginManager, plugin: object, exc: Exception) -> str:
    """Say which hook does not fit its spec, showing both signatures."""
    import inspect

    hook = str(exc).split("hook '", 1)[-1].split("'", 1)[0]
    caller = getattr(pm.hook, hook, None)
    function = getattr(plugin, hook, None)
    if caller is None or caller.spec is None or not callable(function):
        return f"{exc}; the hooks spawnkit knows are " + ", ".join(_expected(pm, h) for h in _HOOKS)
    params = list(inspect.signature(function).parameters)
    extra = [p for p in params if p not in caller.spec.argnames]
    return (
        f"its hook {hook}({', '.join(params)}) asks for {', '.join(extra) or 'arguments'}, "
        f"which spawnkit does not pass; the hookspec is {_expected(pm, hook)}"
    )


def _register(
    pm: pluggy.PluginManager, plugin: object, name: str, dist: str | None, result: Plugins
) -> bool:
    import pluggy

    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        result.broken.append(BrokenPlugin(name, dist, _mismatch(pm, plugin, exc)))
        return False
    except ValueError as exc:  # the same plugin object or name registered twice
        result.broken.append(BrokenPlugin(name, dist, str(exc)))
        return False
    return True


def _load() -> Plugins:
    import pluggy

    from . import _builtin_watches, hookspecs

    result = Plugins()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for blocked in os.environ.get(DISABLE_ENV, "").split(","):
        if blocked.strip():
            pm.set_blocked(blocked.strip())

    dists: dict[str, str | None] = {}
    if _register(pm, _builtin_watches, "spawnkit.watches", _CORE, result):
        dists["spawnkit.watches"] = _CORE
    for ep_name, dist, ep in _entry_points():
        if pm.is_blocked(ep_name):
            continue
        name = f"{ep_name} ({dist})" if pm.has_plugin(ep_name) else ep_name
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the others
            result.broken.append(BrokenPlugin(name, dist, f"import failed: {exc!r}"))
            continue
        if _register(pm, plugin, name, dist, result):
            dists[name] = dist

    while True:  # check_pending() reports one offender at a time
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            plugin_name = pm.get_name(exc.plugin) or "?"
            pm.unregister(exc.plugin)
            unknown = str(exc).split("unknown hook '", 1)[-1].split("'", 1)[0]
            result.broken.append(
                BrokenPlugin(
                    plugin_name,
                    dists.pop(plugin_name, None),
                    f"unknown hook {unknown!r}{_suggest(unknown, _HOOKS)}; the hooks spawnkit "
                    "knows are " + ", ".join(_expected(pm, h) for h in _HOOKS),
                )
            )

    for hook_name, registry, store, kind in (
        ("spawnkit_register_backends", BackendRegistry(), result.backends, "backend"),
        ("spawnkit_register_watches", WatchRegistry(), result.watches, "watch"),
    ):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            registry._distribution = dists.get(impl.plugin_name)
            registry._plugin = impl.plugin_name
            try:
                impl.function(**dict.fromkeys(impl.argnames, registry))
            except Exception as exc:  # noqa: BLE001 - reported, and the other plugins still load
                result.broken.append(
                    BrokenPlugin(impl.plugin_name, registry._distribution, f"{hook_name}: {exc!r}")
                )
        for name, owners in registry._conflicts().items():
            result.conflicts[f"{kind}:{name}"] = owners
        store.update(
            (name, entry)
            for name, entry in registry._entries.items()
            if f"{kind}:{name}" not in result.conflicts
        )
    return result


_HOOKS = ("spawnkit_register_backends", "spawnkit_register_watches")
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
