"""spawnkit's built-in backends, each a plugin registered through the ``spawnkit`` entry points.

They use only ``spawnkit.plugin`` and ``spawnkit``'s exceptions, as a third-party backend
would (tests/test_public_plugin_api.py checks it). One of them is also a base class for
plugins: :class:`FreshInterpreterBackend`, the built-in ``subprocess`` backend, which a
subclass starts with a twist (a command in front, ``Popen`` options).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._fresh import FreshInterpreterBackend

__all__ = ["FreshInterpreterBackend"]


def __getattr__(name: str) -> object:
    # Loaded on use: every worker imports this package for its first code, and needs none of it.
    if name != "FreshInterpreterBackend":
        raise AttributeError(f"module 'spawnkit_backends' has no attribute {name!r}")
    from ._fresh import FreshInterpreterBackend

    return FreshInterpreterBackend
