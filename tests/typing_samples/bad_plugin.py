"""A plugin that gets the protocols wrong: ``mypy --strict`` must reject each marked line.

Type-checked by tests/test_typing.py, never imported or run. Each ``# E: message``
comment is an error mypy must report on the next line; nothing else may be reported.
"""

from __future__ import annotations

from spawnkit import plugin


class BadHandle:
    """Reports the exit status where an outcome belongs and forgets stop."""

    pid = 1234

    def wait_fds(self) -> tuple[int, ...]:
        return ()

    def poll(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class BadBackend:
    """Takes the rank instead of the spec and returns a handle that is not one."""

    def start(self, rank: int, notify: object) -> BadHandle:
        return BadHandle()

    def close(self) -> None:
        pass


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    # E: Argument 2 to "add" of "BackendRegistry" has incompatible type "type[BadBackend]"; expected "Callable[..., Backend]"  # noqa: E501
    registry.add("bad", BadBackend)


# E: Incompatible types in assignment (expression has type "BadHandle", variable has type "WorkerHandle")  # noqa: E501
handle: plugin.WorkerHandle = BadHandle()
# E: Incompatible types in assignment (expression has type "BadBackend", variable has type "Backend")  # noqa: E501
backend: plugin.Backend = BadBackend()
