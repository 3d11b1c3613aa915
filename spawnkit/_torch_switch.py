"""Switch torch.multiprocessing's ``spawn`` and ``start_processes`` over to spawnkit.

Libraries launch their ranks through those two functions, looked up on
``torch.multiprocessing`` at call time: Lightning's and Fabric's ``_MultiProcessingLauncher``
(``mp.start_processes``), ``torch.distributed.elastic``'s ``MultiprocessContext`` (and so
``elastic_launch`` and accelerate's ``notebook_launcher``), accelerate's ``debug_launcher``
(``from torch.multiprocessing import start_processes`` inside the call). Replacing the two
attributes on the package and on its ``spawn`` submodule therefore moves all of them, with no
change to their code: :func:`use_for_torch` does it in a program, ``$SPAWNKIT_TORCH`` (read by
the ``spawnkit_torch.pth`` file the wheel installs) in a program one cannot edit.

This module never imports torch: the switch applies when the program imports
``torch.multiprocessing`` (an import hook), or at once if it already has.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType, TracebackType

    from ._context import ProcessContext

__all__ = ["ENV", "TorchSwitch", "install_from_environment", "use_for_torch"]

ENV = "SPAWNKIT_TORCH"
_PACKAGE = "torch.multiprocessing"
_MODULE = "torch.multiprocessing.spawn"
_NAMES = ("spawn", "start_processes")
# spawn()'s own keywords a switch may fix for every call (the job's, not the backend's).
_SPAWN_KEYWORDS = frozenset(
    {
        "watch",
        "grace_period",
        "env",
        "timeout",
        "log_dir",
        "redirect",
        "tee",
        "prefix",
        "ranks",
        "faulthandler",
    }
)
# Objects of a fork context (multiprocessing's SemLock: every Lock, Event and SimpleQueue)
# refuse to be sent to any process but a forked child of their creator, so a caller that
# asks torch for fork keeps fork whatever the switch chose: Lightning's ddp_fork and
# elastic's MultiprocessContext (accelerate's notebook_launcher) hand their ranks such
# queues and events.
_FORK = "fork"
_SYNTAX = (
    "write it as BACKEND, BACKEND?NAME=VALUE&NAME=VALUE (VALUE a Python literal, else text; "
    "text with commas is a list: preload=torch,numpy), a JSON object such as "
    '{"backend": "forkserver", "preload": ["torch"]}, or 1 to follow torch\'s start_method'
)
_OFF = ("", "0")


@final
class TorchSwitch:
    """One use of :func:`use_for_torch`: ``undo()`` or leaving its ``with`` block ends it.

    While any switch is active, torch's ``spawn``/``start_processes`` run on spawnkit with
    the most recent active switch's settings; once none is, torch's own functions are back.
    """

    def __init__(self, backend: str | None, options: dict[str, Any], source: str) -> None:
        self.backend = backend
        self.options = options
        # use_for_torch(), or the value of $SPAWNKIT_TORCH it was read from.
        self._source = source
        self._from_environment = False

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return f"<TorchSwitch backend={self.backend!r} options={self.options!r} {state}>"

    @property
    def active(self) -> bool:
        """Whether this switch is in force (not yet undone)."""
        with _lock:
            return any(s is self for s in _stack)

    def undo(self) -> None:
        """End this switch; torch's own functions return when no other switch is active.

        Undoing twice, or out of order, is safe: only this switch's entry goes.
        """
        with _lock:
            for i, switch in enumerate(_stack):
                if switch is self:
                    del _stack[i]
                    break
            if not _stack:
                _restore()

    def __enter__(self) -> TorchSwitch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.undo()


# Switches in force, oldest first; the last one decides. The environment's switch, once
# torch.multiprocessing is imported, is the first and is never undone.
_stack: list[TorchSwitch] = []
_lock = threading.RLock()
# torch's own functions, by (module name, attribute), while ours replace them.
_saved: dict[tuple[str, str], Any] = {}
_hooked = False


def _new_lock_in_child() -> None:
    # A fork child (spawnkit's fork backend, Lightning's ddp_fork) may start jobs of its
    # own; another thread of the parent may have held the lock at the fork.
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def use_for_torch(backend: str | None = None, **options: Any) -> TorchSwitch:
    """Make ``torch.multiprocessing.spawn`` and ``start_processes`` run on spawnkit.

    Every library that launches ranks through them (Lightning's ``ddp_spawn``/``ddp_fork``,
    Fabric, ``torch.distributed.elastic``'s function entry points, accelerate's
    ``notebook_launcher`` and ``debug_launcher``) then gets spawnkit's backends, results,
    errors and clean-up, with torch's signatures and return values kept.

    Args:
        backend: the spawnkit backend every call uses, such as ``"forkserver"``; ``None``
            follows each call's ``start_method`` (``"spawn"``, ``"fork"``,
            ``"forkserver"``). A call with ``start_method="fork"`` runs on ``"fork"``
            whatever this says: it may hand its ranks objects of a fork context, which
            only a forked child can use.
        **options: the backend's options (``preload=["torch"]``) and :func:`spawnkit.spawn`'s
            job keywords (``grace_period``, ``timeout``, ``prefix``, ``log_dir``...), given
            to every call. Backend options need ``backend``.

    Returns:
        A :class:`TorchSwitch`: ``undo()`` it, or use it as a context manager, to restore
        torch's functions. Switches nest: the most recent active one decides.

    Raises:
        ConfigError: an unknown backend, or an option it does not take (a subclass names
            it), raised here.

    Example::

        with spawnkit.use_for_torch(backend="forkserver", preload=["torch"]):
            trainer.fit(model)  # Lightning's ddp_spawn now starts ranks from a warm server
    """
    _check(backend, options, where="use_for_torch()")
    switch = TorchSwitch(backend, dict(options), "use_for_torch()")
    with _lock:
        _stack.append(switch)
        _install_hook()
        _apply_if_loaded()
    return switch


def install_from_environment() -> None:
    """``spawnkit_torch.pth``'s entry, run at start-up when ``$SPAWNKIT_TORCH`` is set.

    Only arms the import hook: the variable is read and checked when the program imports
    ``torch.multiprocessing``, where a bad value fails that import with a ConfigError.
    """
    if os.environ.get(ENV, "") in _OFF:
        return
    with _lock:
        _install_hook()


def _check(backend: object, options: dict[str, Any], where: str) -> None:
    from ._api import _check_options
    from ._context import check_seconds
    from ._errors import ConfigError, InvalidArgumentError
    from ._registry import plugins

    for name in ("grace_period", "timeout"):
        check_seconds(name, options.get(name))

    if backend is not None and not isinstance(backend, str):
        raise InvalidArgumentError(
            f"{where}: backend must be a backend name (str) or None, not {backend!r}"
        )
    backend_options = {k: v for k, v in options.items() if k not in _SPAWN_KEYWORDS}
    if backend is None:
        if backend_options:
            raise ConfigError(
                f"{where}: option(s) {', '.join(sorted(backend_options))} belong to a "
                "backend, but none is chosen; name it, such as backend='forkserver'"
            )
        return
    registry = plugins()
    info = registry.backend(backend)
    _check_options(info, backend_options, registry)


def parse_environment(text: str) -> tuple[str | None, dict[str, Any]]:
    """``$SPAWNKIT_TORCH``'s value as ``(backend, options)``; ConfigError if malformed."""
    from ._errors import ConfigError

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"${ENV}={text!r}: {problem}; {_SYNTAX}")

    stripped = text.strip()
    if stripped == "1":
        return None, {}
    if stripped.startswith("{"):
        import json

        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise bad(f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise bad("the JSON must be an object")
        backend = data.pop("backend", None)
        if backend is not None and not isinstance(backend, str):
            raise bad(f'"backend" must be a backend name (str) or null, not {backend!r}')
        return backend, data
    backend, _, query = stripped.partition("?")
    if not backend or not backend.replace("_", "").replace("-", "").isalnum():
        raise bad(f"{backend!r} is not a backend name")
    options: dict[str, Any] = {}
    for item in query.split("&") if query else ():
        name, equals, value = item.partition("=")
        if not equals or not name.isidentifier():
            raise bad(f"{item!r} is not NAME=VALUE")
        if name in options:
            raise bad(f"option {name!r} is given twice")
        options[name] = _value(value)
    return backend, options


def _value(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if "," in text:
        return [part for part in text.split(",") if part]
    return text


def _from_environment() -> TorchSwitch | None:
    text = os.environ.get(ENV, "")
    if text in _OFF:
        return None
    from ._errors import ConfigError

    backend, options = parse_environment(text)
    try:
        _check(backend, options, where=f"${ENV}={text!r}")
    except ConfigError as exc:
        raise _blame_environment(exc, text, options) from None
    return TorchSwitch(backend, options, text)


def _blame_environment(exc: Exception, text: str, options: dict[str, Any]) -> Exception:
    """``exc`` (a ConfigError), its message saying it comes from ``$SPAWNKIT_TORCH``."""
    from ._errors import ConfigError

    texts = sorted(k for k, v in options.items() if isinstance(v, str))
    # The backend checks an option's type only when it starts (forkserver's preload=torch).
    hint = f"; a list of one name is written with a comma: {texts[0]}=NAME," if texts else ""
    message = f"${ENV}={text!r}: {exc}{hint}; fix or unset {ENV}"
    try:
        return type(exc)(message)
    except TypeError:  # a subclass with fields of its own: the base class says it
        return ConfigError(message)


class _Finder:
    """Runs :func:`_on_import` right after ``torch.multiprocessing`` is executed."""

    @staticmethod
    def find_spec(fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _PACKAGE:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _Finder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
                return spec
        return None


class _Loader:
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # The module keeps torch's own loader, as if nothing had been in between.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _on_import()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _install_hook() -> None:
    global _hooked
    if not _hooked:
        sys.meta_path.insert(0, _Finder())
        _hooked = True


def _on_import() -> None:
    with _lock:
        switch = _from_environment()
        if switch is not None and not any(s._from_environment for s in _stack):
            switch._from_environment = True
            _stack.insert(0, switch)
        _apply_if_loaded()


def _apply_if_loaded() -> None:
    package, module = sys.modules.get(_PACKAGE), sys.modules.get(_MODULE)
    if not _stack or package is None or module is None:
        return
    ours = _ours()
    for owner in (package, module):
        for name in _NAMES:
            current = getattr(owner, name, None)
            if current is not ours[name] and current is not None:
                _saved[(owner.__name__, name)] = current
    for owner in (package, module):
        for name in _NAMES:
            setattr(owner, name, ours[name])


def _restore() -> None:
    ours = _ours()
    for (owner_name, name), original in _saved.items():
        owner = sys.modules.get(owner_name)
        # Something that replaced ours since (a test's monkeypatch) stays as it is.
        if owner is not None and getattr(owner, name, None) is ours[name]:
            setattr(owner, name, original)
    _saved.clear()


def _ours() -> dict[str, Callable[..., Any]]:
    return {"spawn": spawn, "start_processes": start_processes}


def _torch_original(name: str) -> Callable[..., Any]:
    original = _saved.get((_MODULE, name))
    if original is None:
        module = sys.modules[_MODULE]
        original = getattr(module, name)
    return original  # type: ignore[no-any-return]


def start_processes(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    start_method: str | None = "spawn",
) -> ProcessContext | None:
    """``torch.multiprocessing.start_processes``, on spawnkit while a switch is active."""
    with _lock:
        switch = _stack[-1] if _stack else None
    if switch is None:
        # A reference taken while a switch was active, called after the last one ended.
        return _torch_original("start_processes")(  # type: ignore[no-any-return]
            fn, args, nprocs, join, daemon, start_method
        )
    from ._api import spawn as spawnkit_spawn

    if start_method is None:
        import multiprocessing

        start_method = multiprocessing.get_context().get_start_method()
    options = switch.options
    if start_method == _FORK or switch.backend is None:
        backend = start_method
        if backend != switch.backend:
            options = {k: v for k, v in options.items() if k in _SPAWN_KEYWORDS}
    else:
        backend = switch.backend
    from ._errors import ConfigError

    try:
        if not join:
            ctx: ProcessContext = spawnkit_spawn(
                fn, args, nprocs, join=False, daemon=daemon, backend=backend, **options
            )
            return ctx
        spawnkit_spawn(fn, args, nprocs, join=True, daemon=daemon, backend=backend, **options)
    except ConfigError as exc:
        if not switch._from_environment or not options:
            raise
        raise _blame_environment(exc, switch._source, options) from exc
    return None  # torch returns nothing after a joined run


def spawn(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    nprocs: int = 1,
    join: bool = True,
    daemon: bool = False,
    start_method: str = "spawn",
) -> ProcessContext | None:
    """``torch.multiprocessing.spawn``, on spawnkit while a switch is active."""
    if start_method != "spawn":
        import warnings

        # torch's own words and category: its spawn() always uses spawn.
        warnings.warn(
            f"This method only supports start_method=spawn (got: {start_method}).\n"
            "To use a different start_method use:\n\t\t"
            " torch.multiprocessing.start_processes(...)",
            FutureWarning,
            stacklevel=2,
        )
    return start_processes(fn, args, nprocs, join, daemon, start_method="spawn")
