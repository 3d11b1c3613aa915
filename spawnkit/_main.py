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

import _thread
import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: workers import this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, ModuleType
    from typing import Any

    from ._registry import BackendInfo, Plugins

__all__ = [
    "load_main",
    "main_reference",
    "refuse_missing_main_file",
    "refuse_while_importing_main",
    "run_function",
    "run_module",
    "run_script",
]


# In the namespace of a worker's ``__main__`` (stand-in or loaded): the reference it came
# from, which the worker's own jobs hand on.
_MARK = "__spawnkit_main__"


def main_reference() -> dict[str, Any]:
    """In the parent: where a worker finds the program's ``__main__``, or why it cannot.

    A small picklable value for :func:`load_main`; hand it to the worker unopened.
    It names the module for ``python -m name`` and the file for a script. For the rest it
    says why no worker can load it: ``python -m pkg`` (``pkg.__main__`` runs its main code
    whenever it is imported), ``python -c``, an interactive session, a notebook, a program
    read from standard input, a script deleted since. Functions defined there must go by
    value (with cloudpickle).
    """
    main = sys.modules.get("__main__")
    namespace: dict[str, Any] = vars(main) if main is not None else {}
    if isinstance(namespace.get(_MARK), dict):
        return dict(namespace[_MARK])  # this process is a worker itself
    given = namespace.get("__file__")
    file = os.path.abspath(given) if isinstance(given, str) else None
    if file is not None and not os.path.isfile(file):
        file = None  # "<stdin>" for `python - < job.py`, or a script deleted since
    name = getattr(namespace.get("__spec__"), "name", None)
    if isinstance(name, str):
        if name == "__main__" or name.endswith(".__main__"):
            reason = (
                f"it is {file or name}, the __main__ of a package, directory or zip file, "
                "which runs its main code whenever it is imported"
            )
        else:
            return {"kind": "name", "target": name, "file": file}
    elif file is not None:
        return {"kind": "path", "target": file, "file": file}
    elif hasattr(sys, "ps1") or sys.flags.interactive:
        reason = "the parent is an interactive session"
    elif sys.argv[:1] == ["-c"]:
        reason = "the parent runs code given with `python -c`"
    elif sys.argv[:1] in (["-"], [""]) or given == "<stdin>":
        reason = "the parent read its program from standard input"
    elif isinstance(given, str):
        reason = f"the parent's program file {given!r} does not exist (any more)"
    else:
        reason = "the parent's __main__ has no source file"
    return {"kind": "none", "target": None, "file": None, "reason": reason}


def load_main(reference: dict[str, Any] | tuple[str, str], *, lazy: bool = True) -> None:
    """In the worker: make the parent's ``__main__`` this process's, its guarded code not run.

    ``reference`` is what :func:`main_reference` gave in the parent. The script is imported
    as ``__mp_main__``, as ``multiprocessing`` does, so its ``if __name__ == "__main__":``
    block, which started the job, does not run again; ``__main__.fn`` in a pickle resolves
    through either name. With ``lazy`` (the default) a stand-in takes its place, and the
    script is imported when the job first looks a name up in it: a job whose function lives
    elsewhere never pays for importing it. ``lazy=False`` imports it now (a server that
    preloads it for its workers), and raises what the import raised. Calling it again with
    the same reference keeps what the first call loaded.
    """
    if isinstance(reference, tuple):  # the form of earlier releases: (kind, where)
        kind, where = reference
        reference = {"kind": "name" if kind == "module" else kind, "target": where}
        reference["file"] = where if kind == "path" else None
    current = sys.modules.get("__mp_main__")
    if current is None or current.__dict__.get(_MARK) != reference:  # else: done already
        stand_in = _LazyMain("__main__")
        stand_in.__dict__[_MARK] = reference
        if reference.get("file"):
            stand_in.__file__ = reference["file"]
        if reference["kind"] == "name":
            from importlib.machinery import ModuleSpec

            # By name, as the parent's: a job this worker starts (multiprocessing's spawn
            # too) imports the module, not its file, whose relative imports would fail.
            stand_in.__spec__ = ModuleSpec(reference["target"], None)
        # Under both names: a worker's own jobs pickle what its script defines as __mp_main__.x
        sys.modules["__main__"] = sys.modules["__mp_main__"] = stand_in
    if not lazy and reference["kind"] != "none":
        _import_main(reference)


class _Main(type(sys)):  # type: ignore[misc]
    """The parent's ``__main__`` as a worker has it: a name it lacks comes with the reason."""

    def __repr__(self) -> str:
        reference = self.__dict__[_MARK]
        if reference["kind"] == "none":
            return (
                "<module '__main__' (a stand-in: no worker can import the parent's __main__: "
                f"{reference['reason']}; define what the job uses in a module file, or run "
                "the parent as a script)>"
            )
        # Pickle names this module when a function is missing from the script: say why.
        return (
            f"<module '__main__' (the parent's {reference['target']}, imported here as "
            "__mp_main__: what it defines under `if __name__ == '__main__':` is not here)>"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module '__main__' has no attribute {name!r}")
        # An AttributeError, as a module raises it: getattr()'s default and hasattr() work.
        # Before 3.14, pickle replaced it with its own, which names the module by its repr
        # above; from 3.14 it passes a module's own error through. So the error says why
        # itself, in the words older pickles use.
        raise AttributeError(f"Can't get attribute {name!r} on {self!r}")


class _LazyMain(_Main):
    """Stands in for the parent's ``__main__`` until the job needs something defined there."""

    def __getattr__(self, name: str) -> Any:
        reference = self.__dict__[_MARK]
        if reference["kind"] == "none" or (name.startswith("__") and name.endswith("__")):
            return super().__getattr__(name)
        with _loading:  # another thread's first lookup waits for the whole module
            module = _import_main(reference)
        return getattr(module, name)


_loading = _thread.RLock()


def _import_main(reference: dict[str, Any]) -> ModuleType:
    loaded = sys.modules.get("__mp_main__")
    if loaded is not None and not isinstance(loaded, _LazyMain):
        return loaded  # loaded already, or being loaded: the partial module, as import does
    module = _Main("__mp_main__")
    if reference["kind"] == "name":
        import importlib.util

        spec = importlib.util.find_spec(reference["target"])
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot find the parent's main module {reference['target']!r}")
        code = spec.loader.get_code(reference["target"])  # type: ignore[attr-defined]
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__package__ = spec.parent
        module.__file__ = spec.origin
    else:
        with open(reference["target"], "rb") as f:
            # Not with this module's `from __future__ import annotations`: the script's own.
            code = compile(f.read(), reference["target"], "exec", dont_inherit=True)
        module.__file__ = reference["target"]
    module.__dict__[_MARK] = reference
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    from . import _worker

    # A rank loads it while it runs; a server, ahead of its ranks. There too, a spawn() the
    # script makes without its main guard must raise, not end the process.
    phase, _worker.phase = _worker.phase, max(_worker.phase, _worker.RUNNING)
    try:
        # Running the parent's script is the point; spawn() knows it runs (no main guard).
        _importing_main(lambda: exec(code, module.__dict__))  # noqa: S102
    except SystemExit as exc:
        # Not the job's own sys.exit(): fn has not run. Exiting 0 would pass for success.
        _restore(loaded)
        raise RuntimeError(
            f"the parent's main module {reference['target']} called sys.exit({exc.code!r}) "
            "while this worker imported it as __mp_main__; exit under its "
            "`if __name__ == '__main__':` block only"
        ) from None
    except BaseException:
        _restore(loaded)
        raise
    finally:
        _worker.phase = phase
    return module


def _restore(previous: ModuleType | None) -> None:
    # As a failed import does: the next lookup tries again, and fails the same way.
    for name in ("__main__", "__mp_main__"):
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


# A script without its main guard calls spawn() while a worker imports it, from the importing
# thread or from one it started, and every worker would start the job again. spawn() refuses
# (spawnkit._api) in the threads the import started, even after it ended, and says why here,
# for _importing_main() to fail the import with, whichever thread was refused.
main_threads: set[object] = set()
refused: str | None = None


def _importing_main(load: Callable[[], object]) -> None:
    """Call ``load``, which imports the parent's main module here, as the import of it.

    The threads it starts are remembered (a spawn() from one is refused), and a spawn() that
    was refused in any thread meanwhile fails the import: the job's function must not run
    from a script that tried to start the job again.
    """
    global refused
    import threading

    from ._errors import ConfigError, NoMainGuard

    before = set(threading.enumerate())
    refused = None
    try:
        load()
    except ConfigError:
        raise
    except Exception as exc:
        # What the script did next without the job it wanted (a NameError, say): the cause.
        if refused is not None:
            raise NoMainGuard(refused) from exc
        raise
    finally:
        main_threads.update(set(threading.enumerate()) - before)
    if refused is not None:
        raise NoMainGuard(refused)


def refuse_while_importing_main() -> None:
    """A worker importing the parent's script (no main guard) must not start a job of its own,
    which would start workers without end: refused from any thread while the import runs, and
    from the threads it started (:func:`_importing_main` remembers those)."""
    import threading

    from . import _worker as worker

    where = _main_being_imported()
    if where is None:
        if threading.current_thread() not in main_threads:
            return
        where = getattr(sys.modules.get("__mp_main__"), "__file__", None) or "the main module"
    from ._errors import NoMainGuard, no_main_guard_message

    message = no_main_guard_message(where)
    if worker.reporting_ready():
        global refused
        refused = message  # fails the import, even when this is another thread
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
