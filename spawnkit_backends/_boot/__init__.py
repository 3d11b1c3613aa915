"""Scripts a new interpreter runs by path, before it can import spawnkit.

Alone in this directory: Python puts a script's directory first on ``sys.path``, and nothing
here may shadow a module of the program's.
"""
