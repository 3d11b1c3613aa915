"""The ``ray`` backend on a real Ray cluster: the kit's universal tier, and what only a
cluster engine has (placement, node spread, an actor's death, the driver's death)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

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
