"""What ``spawnkit run`` runs in each rank: a function, a script or a module, as ``__main__``.

Imported in the workers: only the standard library's lightest parts, on demand.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["call", "module", "script"]


def call(rank: int, fn: Callable[..., Any], *args: str) -> None:
    """``fn(rank, *args)``; its value is dropped: the command has no use for it, and a value
    that cannot be pickled must not fail the rank."""
    fn(rank, *args)


def script(rank: int, path: str, *args: str) -> None:
    """Run the script at ``path`` as ``__main__``, as ``python path ARGS`` would."""
    import os
    import runpy

    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")


def module(rank: int, name: str, *args: str) -> None:
    """Run module ``name`` as ``__main__``, as ``python -m name ARGS`` would."""
    import runpy

    sys.argv = [name, *args]  # runpy puts the module's file in argv[0]
    runpy.run_module(name, run_name="__main__", alter_sys=True)
