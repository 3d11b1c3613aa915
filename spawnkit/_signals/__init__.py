"""Signal handling, one module a concern: the job's holds and foreground, the worker's SIGTERM.

Kept empty: workers import ``sigterm`` and ``threads`` from here, and nothing else may come
with them.
"""
