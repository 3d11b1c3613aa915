"""A rank's first code: ``python -m spawnkit_shellwrap._worker``, the spec read from stdin."""

from __future__ import annotations

import os
import pickle
import sys


def _load_main(kind: str, where: str) -> None:
    # Under its own name, so the script's `if __name__ == "__main__":` block does not start
    # another job; `__main__.fn` in the payload then resolves through either name.
    import runpy
    import types

    module = types.ModuleType("__mp_main__")
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    if kind == "module":
        namespace = runpy.run_module(where, run_name="__mp_main__", alter_sys=True)
    else:
        namespace = runpy.run_path(where, run_name="__mp_main__")
    module.__dict__.update(namespace)


def main() -> int:
    stdin = sys.stdin.buffer
    sys_path, main_module = pickle.load(stdin)
    sys.path[:] = sys_path
    spec = pickle.load(stdin)
    # The pipe has served its purpose; user code reads an empty stdin, as under multiprocessing.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if main_module is not None:
        _load_main(*main_module)

    from spawnkit.plugin import run_worker

    return run_worker(spec)


if __name__ == "__main__":
    sys.exit(main())
