"""spawnkit-relay: a backend whose ranks run in processes the job neither started nor shares
a descriptor with, as a cluster engine's would.

Kept empty: the host process imports this package, and nothing else may come with it.
"""
