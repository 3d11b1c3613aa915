"""The ``ray`` backend on a real Ray cluster: the kit's universal tier, and what only a
cluster engine has (placement, node spread, an actor's death, the driver's death)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import spawnkit
from spawnkit.testing import BackendSuite, wait_for_files
from spawnkit.testing import _targets as t
from spawnkit.testing._processes import descendants, wait_gone

pytestmark = pytest.mark.timeout(180)


class TestRay(BackendSuite):
    backends = ("ray",)


def rank_environment(rank: int) -> dict[str, str]:
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {key: os.environ[key] for key in keys}


def node_of(rank: int) -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def write_pid_then_block(rank: int, directory: str) -> None:
    _publish_pid(rank, directory)
    t.block_forever()


def _publish_pid(rank: int, directory: str) -> None:
    # Whole or not at all: the test reads the file as soon as it exists.
    Path(directory, f"{rank}.tmp").write_text(str(os.getpid()))
    os.replace(Path(directory, f"{rank}.tmp"), Path(directory, f"{rank}.pid"))


def test_results_by_rank_with_the_rank_environment() -> None:
    got = spawnkit.spawn(rank_environment, nprocs=3, backend="ray")
    assert [g["RANK"] for g in got] == ["0", "1", "2"]
    assert {g["WORLD_SIZE"] for g in got} == {"3"}
    # One node here: local ranks are the ranks.
    assert [g["LOCAL_RANK"] for g in got] == ["0", "1", "2"]
    assert {g["LOCAL_WORLD_SIZE"] for g in got} == {"3"}
    assert {g["MASTER_ADDR"] for g in got} == {"127.0.0.1"}
    (port,) = {g["MASTER_PORT"] for g in got}
    assert 0 < int(port) < 65536


def test_an_error_keeps_its_class_and_its_remote_traceback() -> None:
    with pytest.raises(spawnkit.ProcessRaisedException) as info:
        spawnkit.spawn(t.raise_on, args=(1, "bad input"), nprocs=2, backend="ray")
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.error_index == 1
    assert info.value.pid is None  # no process of this machine's tree
    assert "raise_on" in info.value.remote_traceback


def test_sys_exit_3_is_an_exit_code() -> None:
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        spawnkit.spawn(t.exit_with, args=(3, "sys.exit"), nprocs=1, backend="ray")
    assert info.value.exit_code == 3


def raise_or_block(rank: int, directory: str) -> None:
    if rank == 0:
        wait_for_files(Path(directory, "1.pid"))  # the peer is running
        raise RuntimeError("rank 0 failed")
    write_pid_then_block(rank, directory)


def test_a_failing_rank_stops_a_hanging_peer(tmp_path: Path) -> None:
    with pytest.raises(spawnkit.ProcessRaisedException, match="rank 0 failed"):
        spawnkit.spawn(raise_or_block, args=(str(tmp_path),), nprocs=2, backend="ray")
    assert wait_gone([int((tmp_path / "1.pid").read_text())], timeout=30) == set()


def test_sigkill_of_a_ranks_worker_process_is_an_exited_rank(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        write_pid_then_block, args=(str(tmp_path),), nprocs=2, join=False, backend="ray"
    )
    wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
    os.kill(int((tmp_path / "1.pid").read_text()), signal.SIGKILL)
    with pytest.raises(spawnkit.ProcessExitedException) as info:
        ctx.join(timeout=60)
    assert info.value.error_index == 1
    assert "its Ray actor died" in str(info.value)
    assert wait_gone([int((tmp_path / "0.pid").read_text())], timeout=30) == set()


# -- restarts: every attempt a new placement group and new actors ---------------------------


def this_attempt(rank: int) -> dict[str, Any]:
    """What a rank knows of the attempt it runs in: its number (torchrun's name and
    spawnkit's), its process, and its placement group."""
    import ray

    group = ray.util.get_current_placement_group()
    return {
        "rank": rank,
        "attempt": os.environ["TORCHELASTIC_RESTART_COUNT"],
        "spawnkit_attempt": os.environ["SPAWNKIT_ATTEMPT"],
        "pid": os.getpid(),
        "group": None if group is None else group.id.hex(),
    }


def _publish_attempt(directory: str, me: dict[str, Any]) -> None:
    # <attempt>-<rank>.json, whole or not at all: the test reads it as soon as it exists.
    name = f"{me['attempt']}-{me['rank']}"
    Path(directory, f"{name}.tmp").write_text(json.dumps(me))
    os.replace(Path(directory, f"{name}.tmp"), Path(directory, f"{name}.json"))


def _published(directory: Path, attempt: int, nprocs: int) -> list[dict[str, Any]]:
    paths = [directory / f"{attempt}-{rank}.json" for rank in range(nprocs)]
    wait_for_files(*paths, timeout=60)
    return [json.loads(path.read_text()) for path in paths]


def block_in_attempt_0(rank: int, directory: str) -> dict[str, Any]:
    """Attempt 0: say where it runs, then block until stopped; later attempts return it."""
    me = this_attempt(rank)
    if me["attempt"] == "0":
        _publish_attempt(directory, me)
        t.block_forever()
    return me


def fail_in_attempt_0(rank: int, directory: str) -> dict[str, Any]:
    """Attempt 0: every rank says where it runs, then rank 0 raises while rank 1 blocks;
    later attempts return where they run."""
    me = this_attempt(rank)
    if me["attempt"] == "0":
        _publish_attempt(directory, me)
        if rank == 0:
            wait_for_files(Path(directory, "0-1.json"))  # the peer is running
            raise RuntimeError("attempt 0 failed")
        t.block_forever()
    return me


def _group_state(group: str) -> str | None:
    """The cluster's word on a placement group (by id): CREATED, REMOVED..., or None."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table

    found = placement_group_table(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group))))
    return found.get("state")


def _wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Wait until ``check()`` is true (the GCS takes note of a removal, a node reports
    freed resources); return its last value either way, for the assertion to show."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def _free_cpus() -> tuple[float | None, float | None]:
    """The cluster's free CPUs, and all it has."""
    import ray

    return ray.available_resources().get("CPU"), ray.cluster_resources().get("CPU")


def test_a_rank_whose_process_is_killed_in_attempt_0_is_restarted_with_its_job(
    tmp_path: Path,
) -> None:
    ctx = spawnkit.spawn(
        block_in_attempt_0,
        args=(str(tmp_path),),
        nprocs=2,
        join=False,
        backend="ray",
        max_restarts=1,
    )
    with ctx:  # a failed assertion stops every actor all the same
        first = _published(tmp_path, attempt=0, nprocs=2)
        os.kill(first[1]["pid"], signal.SIGKILL)
        assert ctx.join(timeout=120)
        got = ctx.results()
    assert [g["rank"] for g in got] == [0, 1]
    assert {g["attempt"] for g in got} == {g["spawnkit_attempt"] for g in got} == {"1"}
    # New actors: no process of attempt 0 runs a rank of attempt 1.
    assert not {g["pid"] for g in got} & {f["pid"] for f in first}
    report = ctx.report()
    assert report.outcome == "succeeded"
    assert report.attempt == 1
    assert report.failed == ()
    (earlier,) = report.attempts
    assert earlier.attempt == 0
    assert earlier.outcome == "failed"
    assert earlier.failed == (1,)
    root = earlier.root_cause
    assert root is not None
    assert root.rank == 1
    assert root.state == "failed"
    # An actor that died without a report: Ray does not say of what, so no signal.
    assert root.error is None
    assert root.signal is None
    assert root.exit_code == 255
    assert earlier.ranks[0].state == "stopped"  # rank 0 of attempt 0, stopped by spawnkit
    assert "attempt 0" in report.format()
    # Rank 0 of attempt 0 (stopped), and every actor of attempt 1 (the job is over).
    pids = [first[0]["pid"], *(g["pid"] for g in got)]
    assert wait_gone(pids, timeout=30) == set()


def test_each_attempt_runs_in_a_new_placement_group_and_the_old_one_is_removed(
    tmp_path: Path,
) -> None:
    ctx = spawnkit.spawn(
        fail_in_attempt_0,
        args=(str(tmp_path),),
        nprocs=2,
        join=False,
        backend="ray",
        max_restarts=1,
    )
    with ctx:
        got = ctx.results()
    first = _published(tmp_path, attempt=0, nprocs=2)
    (group_0,) = {f["group"] for f in first}  # the ranks of an attempt share one group
    (group_1,) = {g["group"] for g in got}
    assert group_0 is not None
    assert group_1 is not None
    assert group_1 != group_0
    (earlier,) = ctx.report().attempts
    assert earlier.root_cause is not None
    assert earlier.root_cause.error == "RuntimeError: attempt 0 failed"
    # Attempt 0's group went before attempt 1 started; attempt 1's with the job.
    assert _wait_for(lambda: _group_state(group_0) == "REMOVED"), _group_state(group_0)
    assert _wait_for(lambda: _group_state(group_1) == "REMOVED"), _group_state(group_1)
    assert _wait_for(lambda: len(set(_free_cpus())) == 1), _free_cpus()  # all of them
    pids = [f["pid"] for f in first] + [g["pid"] for g in got]
    assert wait_gone(pids, timeout=30) == set()


def test_terminate_ends_every_actor(tmp_path: Path) -> None:
    ctx = spawnkit.spawn(
        write_pid_then_block, args=(str(tmp_path),), nprocs=2, join=False, backend="ray"
    )
    wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=60)
    pids = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
    ctx.terminate(grace_period=1)
    with pytest.raises(spawnkit.JobTerminatedError):
        ctx.join()
    assert wait_gone(pids, timeout=30) == set()


def test_infeasible_resources_fail_in_time_saying_what_was_asked() -> None:
    # It ends at all (the test's timeout bounds it); how fast is not a test's business.
    with pytest.raises(spawnkit.LaunchError) as info:
        spawnkit.spawn(
            t.times, args=(1,), nprocs=2, backend="ray", num_cpus=1000, placement_timeout=2
        )
    message = str(info.value)
    assert "2 rank(s) of {CPU: 1000}" in message
    assert "CPU: 8" in message  # what the cluster has
    import ray

    # Nothing of the refused job holds resources.
    assert ray.available_resources().get("CPU") == 8


def test_a_program_connected_to_ray_keeps_its_connection() -> None:
    import ray

    assert spawnkit.spawn(t.times, args=(2,), nprocs=2, backend="ray") == [0, 2]
    assert ray.is_initialized()


def test_bad_options_are_refused_before_anything_starts() -> None:
    with pytest.raises(spawnkit.ConfigError, match="strategy must be one of"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="ray", strategy="EVERYWHERE")
    with pytest.raises(spawnkit.InvalidArgumentError, match="num_cpus must be a number"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="ray", num_cpus="2")
    with pytest.raises(spawnkit.WatchUnavailableError, match="ends its own workers"):
        spawnkit.spawn(t.times, args=(1,), nprocs=1, backend="ray", watch="pidfd")


def _run_driver(tmp_path: Path, body: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)


DRIVER = """
    import os, time
    from pathlib import Path
    import spawnkit

    def rank(i, directory):
        # Whole or not at all: the test reads the file as soon as it exists.
        Path(directory, f"{i}.tmp").write_text(str(os.getpid()))
        os.replace(Path(directory, f"{i}.tmp"), Path(directory, f"{i}.pid"))
        time.sleep(600)

    if __name__ == "__main__":
        spawnkit.spawn(rank, args=(os.getcwd(),), nprocs=2, backend="ray")
"""


def test_actors_die_with_a_killed_driver(tmp_path: Path) -> None:
    driver = _run_driver(tmp_path, DRIVER, dict(os.environ))
    try:
        wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=120)
        actors = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_gone(actors, timeout=60) == set()
    finally:
        driver.kill()
        driver.wait()


def test_a_local_cluster_it_started_dies_with_a_killed_driver(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = _run_driver(tmp_path, DRIVER, env)
    try:
        wait_for_files(tmp_path / "0.pid", tmp_path / "1.pid", timeout=120)
        cluster = set(descendants(driver.pid))
        cluster |= {int((tmp_path / f"{r}.pid").read_text()) for r in range(2)}
        assert len(cluster) > 3  # its head's daemons and the two actors at least
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_gone(cluster, timeout=60) == set()
    finally:
        driver.kill()
        driver.wait()


def _ray_start(*args: str) -> subprocess.Popen[bytes]:
    ray = str(Path(sys.executable).parent / "ray")
    return subprocess.Popen(
        [ray, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop_session(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def test_two_nodes_strict_spread(tmp_path: Path) -> None:
    """A second cluster of two nodes on this machine; each rank on a node of its own."""
    head = _ray_start("--head", "--port=6390", "--num-cpus=1", "--include-dashboard=false")
    node = None
    try:
        node = _ray_start("--address=127.0.0.1:6390", "--num-cpus=1")
        script = """
            import json, sys
            import ray
            import spawnkit

            def node_of(rank):
                return ray.get_runtime_context().get_node_id()

            if __name__ == "__main__":
                deadline = __import__("time").monotonic() + 90
                ray.init(address="127.0.0.1:6390")
                while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                    assert __import__("time").monotonic() < deadline, "the second node never joined"
                    __import__("time").sleep(0.2)
                nodes = spawnkit.spawn(node_of, nprocs=2, backend="ray", strategy="STRICT_SPREAD")
                print(json.dumps(nodes))
        """
        path = tmp_path / "spread.py"
        path.write_text(textwrap.dedent(script))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        out = subprocess.run(
            [sys.executable, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        nodes = __import__("json").loads(out.stdout.strip().splitlines()[-1])
        assert len(set(nodes)) == 2
    finally:
        if node is not None:
            _stop_session(node)
        _stop_session(head)


def _remote_addresses() -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "0A":  # listening: no peer
                continue
            host = remote.split(":")[0]
            raw = bytes.fromhex(host)
            if len(raw) == 4:
                found.add(str(ipaddress.IPv4Address(raw[::-1])))
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                found.add(str(ipaddress.IPv6Address(b"".join(words))))
    return found


def test_no_ray_socket_connects_beyond_loopback() -> None:
    spawnkit.spawn(t.times, args=(1,), nprocs=2, backend="ray")
    peers = _remote_addresses()
    assert peers  # the run's own connections to the head are there to see
    for peer in peers:
        address = ipaddress.ip_address(peer)
        if address.is_unspecified:  # a socket without a peer yet
            continue
        mapped = getattr(address, "ipv4_mapped", None)
        assert address.is_loopback or (mapped is not None and mapped.is_loopback), peer
