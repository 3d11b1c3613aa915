"""A script (``spawnkit run clienv.py``) and a module (``spawnkit run -m clienv``) that prints,
as one JSON line, what a rank sees: ``__name__``, ``sys.argv`` and the rank's variables."""

import json
import os
import sys

NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
seen = {"name": __name__, "argv": sys.argv, "env": {k: os.environ.get(k) for k in NAMES}}
sys.stdout.write(json.dumps(seen) + "\n")
sys.stdout.flush()
