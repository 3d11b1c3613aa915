"""``ray``: each rank a Ray actor, so the same job runs on a Ray cluster.

One actor per rank (tasks share processes and Ray retries them silently), with restarts and
retries off, inside a placement group of one bundle per rank, so that every rank starts or
none does. The actor runs only the part of a worker that every backend shares
(:func:`spawnkit.plugin.run_rank`) and returns its report; Ray carries it home. Ray ends the
actors when the job's process dies (its owner fate-sharing); a local cluster this backend
started itself goes with the job's process too (``_ray_head``).

Ray is imported only when a job uses this backend.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, final

import spawnkit
from spawnkit import plugin

NAME = "ray"
OPTIONS = ("address", "num_cpus", "num_gpus", "resources", "strategy", "placement_timeout")
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
INSTALL = "pip install 'spawnkit[ray]'"


def _unavailable() -> str | None:
    if sys.platform == "win32":
        return "the ray backend runs on Linux and macOS"
    else:  # a platform branch type checkers understand
        if importlib.util.find_spec("ray") is None:
            return f"Ray is not installed: {INSTALL}"
        return None


def _factory(nprocs: int, **options: Any) -> RayBackend:
    return RayBackend(nprocs, **options)


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        NAME,
        _factory,
        options=OPTIONS,
        remote=True,
        watches="own",  # the engine ends the actors with the job (see registry.add)
        pass_nprocs=True,
        unavailable=_unavailable(),
        description="a Ray actor per rank, in one placement group; any Ray cluster",
    )


# -- options ------------------------------------------------------------------------------


def _fail(message: str, error: type[spawnkit.ConfigError] = spawnkit.ConfigError) -> NoReturn:
    raise error(f"backend {NAME!r}: {message}")


def _amount(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"{name} must be a number, not {value!r}", spawnkit.InvalidArgumentError)
    if not math.isfinite(value) or value < 0:
        _fail(f"{name} must be a finite number >= 0, not {value!r}")
    return float(value)


def _bundle(num_cpus: object, num_gpus: object, resources: object) -> dict[str, float]:
    bundle = {"CPU": _amount("num_cpus", num_cpus)}
    if _amount("num_gpus", num_gpus):
        bundle["GPU"] = float(num_gpus)  # type: ignore[arg-type]
    if resources is not None:
        if not isinstance(resources, Mapping):
            _fail(
                f"resources must be a mapping of resource name to amount per rank, such as "
                f'{{"accelerator": 1}}, not {resources!r}',
                spawnkit.InvalidArgumentError,
            )
        for key, value in resources.items():
            if not isinstance(key, str) or key in ("CPU", "GPU"):
                _fail(f"resources names custom resources (str); use num_cpus/num_gpus for {key!r}")
            bundle[key] = _amount(f"resources[{key!r}]", value)
    if not any(bundle.values()):
        _fail("each rank must ask for some resource: num_cpus, num_gpus or resources > 0")
    return bundle


# -- the actor ------------------------------------------------------------------------------

_actor_class: Any = None


def _rank_actor() -> Any:
    """The actor class, defined once Ray is imported."""
    global _actor_class
    if _actor_class is None:
        import ray

        @ray.remote
        class RankActor:
            """Hosts one rank: reports where it runs, then runs it once."""

            def __init__(self, path: list[str]) -> None:
                # The job's own directories (its script's, PYTHONPATH), after the worker's:
                # where they exist here, the job's modules import as they did in the job.
                sys.path.extend(p for p in path if p not in sys.path)

            def where(self, want_port: bool) -> tuple[str, str, int]:
                import socket

                node = ray.get_runtime_context().get_node_id()
                address = ray.util.get_node_ip_address()
                port = 0
                if want_port:
                    with socket.socket() as s:
                        s.bind((address, 0))
                        port = int(s.getsockname()[1])
                return node, address, port

            def run(self, spec: plugin.WorkerSpec) -> plugin.Report:
                return plugin.run_rank(spec)

        _actor_class = RankActor
    return _actor_class


# -- the handle -----------------------------------------------------------------------------


@final
class RayHandle:
    """One rank's actor and the reference to its ``run``."""

    def __init__(self, actor: Any, future: Any) -> None:
        self._actor = actor
        self._future = future

    @property
    def pid(self) -> int | None:
        return None  # a process of some node of the cluster, not of this machine's tree

    def wait_fds(self) -> tuple[int, ...]:
        return ()  # the future's callback notifies core

    def poll(self) -> plugin.Outcome | None:
        if not self._future.done():
            return None
        from ray.exceptions import RayActorError

        try:
            report = self._future.result()
        except RayActorError as exc:
            return plugin.Outcome(255, None, lost=f"its Ray actor died: {_first_lines(exc)}")
        except BaseException as exc:  # noqa: BLE001 - Ray's own failure to run it
            return plugin.Outcome(255, None, lost=f"Ray could not run it: {_first_lines(exc)}")
        if not isinstance(report, plugin.Report):
            return plugin.Outcome(255, None, lost=f"its actor returned {report!r}")
        return plugin.Outcome(report.status, report)

    def stop(self, force: bool = False) -> None:
        # Ray cannot interrupt a running actor task, gracefully or not: both end the actor.
        import ray

        try:
            ray.kill(self._actor, no_restart=True)
        except Exception:  # noqa: BLE001, S110 - gone already: nothing left to stop
            pass

    def close(self) -> None:
        pass


def _first_lines(exc: BaseException, count: int = 3) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:count]) or type(exc).__name__


# -- a local cluster of the job's own --------------------------------------------------------


@final
class _LocalHead:
    """A head node in a session of its own that ends with the job (``_ray_head``)."""

    def __init__(self, num_cpus: int) -> None:
        # The node speaks the job's authentication mode, which Ray fixes when it is first
        # imported: token authentication where RAY_AUTH_MODE=token says so (the token from
        # RAY_AUTH_TOKEN or ~/.ray/auth_token), else none, on a node that listens on
        # 127.0.0.1 only.
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "spawnkit_backends._ray_head", str(num_cpus)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        # The pipe's end is the job's lifeline for the cluster: no fork may keep a copy.
        plugin.mark_parent_only(self._process.stdin.fileno())
        line = self._process.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("READY "):
            self.stop()
            raise spawnkit.LaunchError(
                f"backend {NAME!r} could not start a local Ray cluster: "
                f"{line.removeprefix('FAILED ') or 'its head process ended'}; pass address= "
                "of a running cluster, or check `ray start --head` by hand"
            )
        self.address = line.split(" ", 1)[1]

    def stop(self) -> None:
        stdin = self._process.stdin
        if stdin is not None:
            plugin.unmark_parent_only(stdin.fileno())
            stdin.close()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


# -- the backend ----------------------------------------------------------------------------


@final
class RayBackend:
    """Runs each rank as a Ray actor.

    Args:
        nprocs: the job's number of ranks (given by core).
        address: a running cluster's address (``"host:port"``, ``"auto"``); default
            ``$RAY_ADDRESS``. A program that called ``ray.init()`` itself keeps its
            connection. With none of these, a local cluster is started for the job (with
            at least one CPU per rank) and stopped after it.
        num_cpus, num_gpus, resources: what each rank asks of its node (default 1 CPU).
        strategy: placement of the ranks' bundles: PACK (default), SPREAD, STRICT_PACK or
            STRICT_SPREAD (every rank on another node).
        placement_timeout: seconds to wait for the cluster to place every rank; past it,
            :class:`spawnkit.LaunchError` says what was asked and what the cluster has.
    """

    def __init__(
        self,
        nprocs: int,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: Mapping[str, float] | None = None,
        strategy: str = "PACK",
        placement_timeout: float = 60.0,
    ) -> None:
        given: object = address  # what a caller may really pass, whatever the annotation
        if given is not None and not isinstance(given, str):
            _fail(f"address must be a str such as '10.0.0.5:6379', not {given!r}")
        if strategy not in STRATEGIES:
            _fail(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self._bundle = _bundle(num_cpus, num_gpus, resources)
        timeout = _amount("placement_timeout", placement_timeout)
        import ray

        self._head: _LocalHead | None = None
        self._connected = False
        self._pg: Any = None
        self._actors: list[Any] = []
        try:
            if not ray.is_initialized():
                address = address or os.environ.get("RAY_ADDRESS") or None
                if address is None:
                    cpus = max(os.cpu_count() or 1, math.ceil(nprocs * self._bundle["CPU"]))
                    self._head = _LocalHead(cpus)
                    address = self._head.address
                ray.init(address=address, log_to_driver=True, configure_logging=False)
                self._connected = True
            elif address is not None:
                _fail(
                    "this program is connected to a Ray cluster already (ray.init()); "
                    "leave address= out to use that one"
                )
            self._place(nprocs, strategy, timeout)
            self._env = self._rank_env(nprocs, timeout)
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()

    def _place(self, nprocs: int, strategy: str, timeout: float) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._pg = placement_group([dict(self._bundle) for _ in range(nprocs)], strategy=strategy)
        ready, _ = ray.wait([self._pg.ready()], timeout=timeout)
        if not ready:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            raise spawnkit.LaunchError(
                f"backend {NAME!r}: the cluster could not place {nprocs} rank(s) of "
                f"{_show(self._bundle)} each ({strategy}) within {timeout:g} s; it has "
                f"{_show(ray.cluster_resources())} on {len(nodes)} node(s), "
                f"{_show(ray.available_resources())} free. Ask for less per rank "
                "(num_cpus=), fewer ranks, another strategy, or add nodes"
            )
        actor = _rank_actor()
        path = [p for p in sys.path if isinstance(p, str) and p]
        for rank in range(nprocs):
            options: dict[str, Any] = {
                "num_cpus": self._bundle["CPU"],
                "max_restarts": 0,
                "max_task_retries": 0,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=rank
                ),
            }
            if "GPU" in self._bundle:
                options["num_gpus"] = self._bundle["GPU"]
            custom = {k: v for k, v in self._bundle.items() if k not in ("CPU", "GPU")}
            if custom:
                options["resources"] = custom
            self._actors.append(actor.options(**options).remote(path))

    def _rank_env(self, nprocs: int, timeout: float) -> list[dict[str, str]]:
        """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT (rank 0's node)."""
        import ray

        places = ray.get(
            [a.where.remote(rank == 0) for rank, a in enumerate(self._actors)], timeout=timeout
        )
        _, master_addr, master_port = places[0]
        envs = []
        for rank, (node, _, _) in enumerate(places):
            same_node = [r for r, place in enumerate(places) if place[0] == node]
            envs.append(
                {
                    "RANK": str(rank),
                    "WORLD_SIZE": str(nprocs),
                    "LOCAL_RANK": str(same_node.index(rank)),
                    "LOCAL_WORLD_SIZE": str(len(same_node)),
                    "MASTER_ADDR": master_addr,
                    "MASTER_PORT": str(master_port),
                }
            )
        return envs

    def start(self, spec: plugin.WorkerSpec, notify: Callable[[], None]) -> RayHandle:
        actor = self._actors[spec.rank]
        future = actor.run.remote(spec.with_env(self._env[spec.rank])).future()
        future.add_done_callback(lambda _: notify())
        return RayHandle(actor, future)

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            for actor in self._actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001, S110 - ended already
                    pass
            if self._pg is not None:
                from ray.util.placement_group import remove_placement_group

                try:
                    remove_placement_group(self._pg)
                except Exception:  # noqa: BLE001, S110 - the cluster is gone already
                    pass
            if self._connected:
                ray.shutdown()  # this job's connection; a cluster it did not start stays
        self._actors.clear()
        self._pg = None
        if self._head is not None:
            self._head.stop()
            self._head = None


def _show(resources: Mapping[str, float]) -> str:
    shown = {
        k: v
        for k, v in sorted(resources.items())
        if not k.startswith(("node:", "memory", "object_store"))
    }
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}"
