"""The program's ``__main__``: what the parent checks of it, how a worker loads it, and what
``spawnkit run`` runs as a rank's ``__main__``.

A function the program defines in its script is pickled as ``__main__.fn``. A worker that
starts from a fresh interpreter (or a host's process) has another ``__main__``, so before it
unpickles the job it loads the parent's script under the name ``__mp_main__``, as
``multiprocessing`` does: the script's ``if __name__ == "__main__":`` block, which started
the job, does not run again.

Imported in workers: standard library only, loaded on use.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: workers import this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    from ._registry import BackendInfo, Plugins

__all__ = [
    "load_main",
    "main_reference",
    "main_unimportable",
    "refuse_missing_main_file",
    "refuse_while_importing_main",
    "run_function",
    "run_module",
    "run_script",
]


def main_reference() -> tuple[str, str] | None:
    """In the parent: how a worker finds its ``__main__``; ``None`` when it cannot.

    ``("module", name)`` for a program run with ``python -m name``; ``("path", file)`` for a
    script file. ``None`` for ``python -m pkg`` (``pkg.__main__`` is never where a job's
    function lives), ``python -c``, an interactive session, a notebook, or a program read
    from standard input: there is no file a worker could load (send such functions by value,
    with cloudpickle).
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if isinstance(name, str):
        return None if name.split(".")[-1] == "__main__" else ("module", name)
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    return ("path", os.path.abspath(path))


def load_main(reference: tuple[str, str]) -> None:
    """In the worker: load the parent's ``__main__`` as ``__mp_main__``, guarded code not run.

    Afterwards ``__main__.fn`` in a payload resolves through either name. Call it before
    :func:`spawnkit.plugin.run_rank` or :func:`spawnkit.run_worker`, and only when the
    payload names ``__main__`` (``b"__main__" in spec.payload``): loading the script costs
    an import of everything it imports.
    """
    import runpy
    import types

    from ._worker import importing_main

    kind, where = reference
    module = types.ModuleType("__mp_main__")
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    if kind == "module":
        namespace = importing_main(
            lambda: runpy.run_module(where, run_name="__mp_main__", alter_sys=True)
        )
    else:
        namespace = importing_main(lambda: runpy.run_path(where, run_name="__mp_main__"))
    module.__dict__.update(namespace)


def main_unimportable() -> str | None:
    """Why a new interpreter cannot import what ``__main__`` defines, or ``None``."""
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None):
        return None
    path = getattr(main, "__file__", None)
    if path is None:
        return "the program has no file (python -c, a notebook or an interactive session)"
    if path == "<stdin>" or not os.path.isfile(path):
        return f"the program was read from standard input ({path!r}), not from a file"
    return None


def refuse_while_importing_main() -> None:
    """A worker importing the parent's script (no main guard) must not start a job of its own,
    which would start workers without end: refused from any thread while the import runs, and
    from the threads it started (``spawnkit._worker.importing_main`` remembers those)."""
    import threading

    from . import _worker as worker

    where = _main_being_imported()
    if where is None:
        if threading.current_thread() not in worker.main_threads:
            return
        where = getattr(sys.modules.get("__mp_main__"), "__file__", None) or "the main module"
    from ._errors import NoMainGuard, no_main_guard_message

    message = no_main_guard_message(where)
    if worker.reporting_ready():
        worker.refused = message  # fails the import, even when this is another thread
        raise NoMainGuard(message)
    # Still in the backend's own start-up (multiprocessing's): nothing of spawnkit's can
    # report yet. The status alone tells the parent, which says it once for every rank.
    from ._wire import NO_MAIN_GUARD_STATUS

    os._exit(NO_MAIN_GUARD_STATUS)


def _main_being_imported() -> str | None:
    """Where ``__mp_main__`` is, if a thread of this process runs its top level; else None."""
    if "__mp_main__" not in sys.modules:  # every import of it puts it there first (runpy too)
        return None
    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None:
            if (
                frame.f_code.co_name == "<module>"
                and frame.f_globals.get("__name__") == "__mp_main__"
            ):
                return str(frame.f_globals.get("__file__") or "the main module")
            frame = frame.f_back
    return None


def refuse_missing_main_file(info: BackendInfo, registry: Plugins) -> None:
    """A backend whose workers run the main program's file again needs that file."""
    if not info.needs_main_file:
        return
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return  # python -m: the workers import the module by name
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        return  # no file at all (python -c): nothing is run again
    from ._errors import ConfigError

    what = "read from standard input" if path == "<stdin>" else f"whose file {path!r} is gone"
    able = sorted(
        b.name for b in registry.backends.values() if b.available and not b.needs_main_file
    )
    instead = f", or use a backend that does not: {', '.join(map(repr, able))}" if able else ""
    raise ConfigError(
        f"backend {info.name!r} cannot start workers for a program {what}: each of its "
        "workers runs the main program's file again. Save the program to a file and run "
        f"that{instead}"
    )


def run_function(rank: int, fn: Callable[..., Any], *args: str) -> None:
    """``spawnkit run``'s ``fn(rank, *args)``; the value is dropped: the command has no use
    for it, and a value that cannot be pickled must not fail the rank."""
    fn(rank, *args)


def run_script(rank: int, path: str, *args: str) -> None:
    """Run the script at ``path`` as ``__main__``, as ``python path ARGS`` would."""
    import runpy

    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")


def run_module(rank: int, name: str, *args: str) -> None:
    """Run module ``name`` as ``__main__``, as ``python -m name ARGS`` would."""
    import runpy

    sys.argv = [name, *args]  # runpy puts the module's file in argv[0]
    runpy.run_module(name, run_name="__main__", alter_sys=True)
