"""spawnkit's built-in backends, each a plugin registered through the ``spawnkit`` entry points.

They use only ``spawnkit.plugin`` and ``spawnkit``'s exceptions, as a third-party backend
would (tests/test_public_plugin_api.py checks it); the fork server's two modules are the
exception that test still lists.
"""
