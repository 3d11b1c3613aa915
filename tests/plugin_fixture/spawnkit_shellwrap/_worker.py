"""A rank's first code: ``python -m spawnkit_shellwrap._worker``, the spec read from stdin."""

from __future__ import annotations

import os
import pickle
import sys


def main() -> int:
    stdin = sys.stdin.buffer
    sys_path, main_module = pickle.load(stdin)
    sys.path[:] = sys_path
    spec = pickle.load(stdin)
    # The pipe has served its purpose; user code reads an empty stdin, as under multiprocessing.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    from spawnkit.plugin import load_main, run_worker

    load_main(main_module)  # the user's script, imported once the job looks a name up in it
    return run_worker(spec)


if __name__ == "__main__":
    sys.exit(main())
