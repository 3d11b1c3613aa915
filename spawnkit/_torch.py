"""Interop with torch, for a program that has loaded it; this module never imports torch.

Code written for ``torch.multiprocessing`` catches torch's own exception classes:
``torch.distributed.elastic`` turns ``ProcessRaisedException``/``ProcessExitedException``
into its ``ChildFailedError``, accelerate and Lightning catch them around their launchers.
With torch loaded, spawnkit's failures are instances of a class derived from both spawnkit's
class and torch's (:func:`flavoured`), so ``except torch.multiprocessing....`` and
``except spawnkit....`` both catch them. Without torch, nothing here runs and torch stays
unloaded: importing it costs seconds.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TypeVar

E = TypeVar("E", bound=BaseException)

__all__ = ["flavoured", "torch_spawn"]

# torch.multiprocessing's __init__ imports this module: either name being loaded means it is.
_SPAWN_MODULE = "torch.multiprocessing.spawn"
# spawnkit's exception classes that torch has a namesake of, by name.
_NAMES = ("ProcessRaisedException", "ProcessExitedException", "ProcessException")

_made: dict[tuple[type, type], type] = {}
_lock = threading.Lock()


def torch_spawn() -> Any:
    """``torch.multiprocessing.spawn`` if the program has loaded it, else ``None``."""
    module = sys.modules.get(_SPAWN_MODULE)
    # A module object that is still being imported may lack the classes yet: not loaded.
    if module is None or not all(hasattr(module, name) for name in _NAMES):
        return None
    return module


def flavoured(cls: type[E]) -> type[E]:
    """``cls`` (a spawnkit ``ProcessException`` class), made catchable as torch's namesake.

    Created once per pair and cached; named and pickled as ``cls``, so its instances unpickle
    as whatever ``cls`` is on the other side: the same again where torch is loaded, plain
    spawnkit where it is not. ``cls`` itself when torch is not loaded.
    """
    spawn = torch_spawn()
    if spawn is None:
        return cls
    theirs: type | None = None
    for base in cls.__mro__:
        if base.__module__ == "spawnkit" and base.__name__ in _NAMES:
            theirs = getattr(spawn, base.__name__)
            break
    if theirs is None or issubclass(cls, theirs):
        return cls
    key = (cls, theirs)
    with _lock:
        made = _made.get(key)
        if made is None:
            made = type(
                cls.__name__,
                (cls, theirs),
                {
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__doc__": cls.__doc__,
                    "__reduce__": _reduce,
                    "_spawnkit_class": cls,  # what it pickles as (see _reduce)
                },
            )
            _made[key] = made
    return made


def _reduce(self: Any) -> Any:
    # By spawnkit's public class: its __new__ derives torch's flavour again on the
    # unpickling side if torch is loaded there, and nothing of torch is named in the pickle.
    _, args, *rest = super(type(self), self).__reduce__()
    return (type(self)._spawnkit_class, args, *rest)
