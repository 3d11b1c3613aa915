"""spawnkit's built-in backends, each a plugin registered through the ``spawnkit`` entry points.

They use only ``spawnkit.plugin`` and ``spawnkit``'s exceptions, as a third-party backend
would (tests/test_public_plugin_api.py checks it); only the fresh interpreter's first code
(``_boot/fresh_worker.py``) guards the import of the job's ``__main__`` with core's own hook.
"""
