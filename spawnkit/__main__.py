"""``python -m spawnkit``: the same command line as ``spawnkit``."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
