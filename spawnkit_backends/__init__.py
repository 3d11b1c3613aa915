"""spawnkit's built-in backends, each a plugin registered through the ``spawnkit`` entry points.

They use only spawnkit's public names, exactly as a third-party backend would.
"""
