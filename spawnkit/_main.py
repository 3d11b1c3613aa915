"""The program's ``__main__`` in a worker that is not a copy of the parent.

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

__all__ = ["load_main", "main_reference"]


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
