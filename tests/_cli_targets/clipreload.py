"""A module that ``spawnkit run -o preload='["clipreload"]'`` imports in the fork server: it
records the pid of the process that imported it, which a rank forked from the server is not."""

import os

IMPORTED_BY = os.getpid()
