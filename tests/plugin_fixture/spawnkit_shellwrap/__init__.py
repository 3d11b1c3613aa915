"""spawnkit-shellwrap: a spawnkit backend that starts each rank through ``/bin/sh -c``.

Kept empty on purpose: every worker imports this package, and workers must stay light.
"""
