"""Each rank's environment: torchrun's rank variables, and the job's own ``env``.

Every worker sees ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``, so ``torch.distributed.init_process_group()`` works in
it unchanged. A master address and port the program set itself are kept; otherwise rank 0
will listen on a loopback port that was free when the job started.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Mapping

from ._errors import ConfigError, InvalidArgumentError
from ._restarts import attempt_env

__all__ = ["EnvOption", "rank_envs"]

# The master spawnkit chose, as its ranks see it: a job started inside a rank tells the
# outer job's master (keep the address, take a port of its own) from one the program set.
_OURS = "SPAWNKIT_MASTER"

EnvOption = Mapping[str, str] | Callable[[int], Mapping[str, str]] | None


# The last ports handed out: the next job, or the next attempt of a restarted one, gets
# another, so nothing of an earlier rendezvous can reach it.
_recent: deque[int] = deque(maxlen=8)


def _free_port() -> int:
    for _ in range(2 * (_recent.maxlen or 0)):  # bounded: a system nearly out of ports
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _recent:
            break
    _recent.append(port)
    return port


def _checked(env: object, where: str) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise InvalidArgumentError(
            f"{where} must be a mapping of str to str, not {type(env).__name__} {env!r:.80}"
        )
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentError(
                f"{where} must map str to str; {key!r}: {value!r} is "
                f"{type(key).__name__}: {type(value).__name__}"
            )
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ConfigError(f"{where} has an invalid variable {key!r}: {value!r}")
        checked[key] = value
    return checked


def rank_envs(
    nprocs: int, env: EnvOption, *, local: bool = True, attempt: int = 0, max_restarts: int = 0
) -> list[dict[str, str]]:
    """Every rank's variables, checked before any process starts; ``envs[rank]``.

    Called again for every attempt of a restarted job: a new free port for each, so that
    nothing of an earlier attempt's rendezvous can reach the new one.

    ``env`` (a mapping for every rank, or a callable ``rank -> mapping``) comes last, so it
    may set any of the rank variables itself.
    """
    if env is not None and not isinstance(env, Mapping) and not callable(env):
        raise InvalidArgumentError(
            f"env must be a mapping of str to str or a callable rank -> mapping, not {env!r:.80}"
        )
    addr, port = os.environ.get("MASTER_ADDR") or "", os.environ.get("MASTER_PORT") or ""
    if f"{addr}:{port}" == os.environ.get(_OURS):
        port = ""  # set by the job this process is a rank of: a nested job needs its own
    addr = addr or "127.0.0.1"
    port = port or (str(_free_port()) if local else "29500")
    common = {
        "WORLD_SIZE": str(nprocs),
        "LOCAL_WORLD_SIZE": str(nprocs),
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
        _OURS: f"{addr}:{port}",
        **attempt_env(attempt, max_restarts),
    }
    fixed = _checked(env, "env") if isinstance(env, Mapping) else None
    envs = []
    for rank in range(nprocs):
        own = fixed if fixed is not None or env is None else _checked(env(rank), f"env({rank})")  # type: ignore[operator]
        envs.append({**common, "RANK": str(rank), "LOCAL_RANK": str(rank), **(own or {})})
    return envs
