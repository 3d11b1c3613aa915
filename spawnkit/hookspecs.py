"""The hooks a plugin implements, the markers for implementing them, and the registries the
hooks hand it.

A plugin is any module or object named by an entry point in the ``spawnkit`` group::

    [project.entry-points.spawnkit]
    mybackend = "spawnkit_mybackend"

with a function marked ``@spawnkit.hookimpl`` for one or both hooks below. spawnkit loads
plugins lazily, once, in the parent only; workers never import pluggy. Each hook runs as one
pluggy call over all plugins (``tryfirst``, ``trylast`` and wrappers work); a hook that raises
is reported as a broken plugin, and the others still run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, final

import pluggy

from ._errors import PluginError

if TYPE_CHECKING:
    from ._protocols import Backend, ParentWatch

__all__ = ["hookimpl", "hookspec", "spawnkit_register_backends", "spawnkit_register_watches"]

PROJECT = "spawnkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# ``watches=`` of a backend that ends its own workers when the job's process dies.
OWN_FATE_SHARING = "own"


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
    remote: bool = False
    watches: tuple[str, ...] | str | None = None
    pass_nprocs: bool = False
    needs_main_file: bool = False

    @property
    def available(self) -> bool:
        return self.unavailable is None

    @property
    def own_fate_sharing(self) -> bool:
        """Whether the backend itself ends its workers when the job's process dies."""
        return self.watches == OWN_FATE_SHARING

    def allows_watch(self, name: str) -> bool:
        """Whether the parent watch ``name`` can guard this backend's workers."""
        if isinstance(self.watches, tuple):
            return name in self.watches
        if self.watches is None and not self.remote:
            return True
        return name == "none"


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


def _dist(distribution: str | None) -> str:
    return f"distribution {distribution!r}" if distribution else "an unknown distribution"


_R = TypeVar("_R", bound="_Registry")


class _Registry:
    _kind = ""

    def __init__(self) -> None:
        # name -> (distribution, plugin name, entry) for every plugin that registered it
        self._claims: dict[str, list[tuple[str | None, str, Any]]] = {}
        self._distribution: str | None = None
        self._plugin = ""

    def _on_behalf_of(self: _R, distribution: str | None, plugin: str) -> _R:
        """The registry one plugin's hook gets: what it adds is that plugin's claim."""
        view = copy.copy(self)  # shares the claims
        view._distribution, view._plugin = distribution, plugin
        return view

    def _add(self, name: str, entry: Any) -> None:
        if not isinstance(name, str) or not name or name == "auto" or ":" in name:
            raise PluginError(
                f"{self._kind} name {name!r} from {_dist(self._distribution)} is invalid; "
                "use a non-empty string other than 'auto' and without ':' (which separates "
                "a distribution from a name)"
            )
        self._claims.setdefault(name, []).append((self._distribution, self._plugin, entry))


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
        remote: bool = False,
        watches: Iterable[str] | str | None = None,
        pass_nprocs: bool = False,
        needs_main_file: bool = False,
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
            remote: whether the workers run outside this machine's process tree (another
                machine, a cluster engine's processes): they then get no descriptor, no
                local pid and no local setup, and the job's arguments may not carry
                descriptors.
            watches: the parent watches that can guard this backend's workers: names, or
                ``"own"`` (:data:`OWN_FATE_SHARING`) for a backend whose engine ends the
                workers itself when the job's process dies. ``None``: every watch for a
                local backend, none for a remote one. ``watch="auto"`` picks among them;
                a watch outside them is refused before anything starts.
            pass_nprocs: call the factory with the job's ``nprocs=`` too, so that it can
                check its options against the number of ranks (and raise
                :class:`spawnkit.ConfigError`) before any worker starts.
            needs_main_file: whether every worker runs the main program's file again, as
                ``multiprocessing``'s spawn does: a program read from standard input (or
                whose file is gone) is then refused before any worker starts, naming the
                backends that can run it.
        """
        if watches is not None and not isinstance(watches, str):
            watches = tuple(watches)
        if isinstance(watches, str) and watches != OWN_FATE_SHARING:
            raise ValueError(
                f"watches must be watch names or {OWN_FATE_SHARING!r}, not {watches!r}"
            )
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
                remote=remote,
                watches=watches,
                pass_nprocs=pass_nprocs,
                needs_main_file=needs_main_file,
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


@hookspec
def spawnkit_register_backends(registry: BackendRegistry) -> None:
    """Called once, the first time spawnkit needs its backends, in the parent process.

    Add every backend the plugin provides with ``registry.add(name, factory, ...)``. Add a
    backend that cannot run on this platform too, with ``unavailable="why"``, so users get
    the reason instead of "unknown backend". Do no work here beyond registering: import
    heavy modules inside the factory.
    """


@hookspec
def spawnkit_register_watches(registry: WatchRegistry) -> None:
    """Called once, the first time spawnkit needs its parent watches, in the parent process.

    Add every parent-death watch the plugin provides with ``registry.add(name, factory,
    priority=..., unavailable=...)``; ``watch="auto"`` picks the available watch with the
    highest priority.
    """
