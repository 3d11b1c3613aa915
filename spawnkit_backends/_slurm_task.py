"""A Slurm task of the ``slurm`` backend: ``python -m spawnkit_backends._slurm_task``.

Reads the job's address, port and secret from its stdin (srun's ``--input=all``), connects
back to the job there, authenticated both ways with the secret, says where it runs, receives
its rank's spec, and forks one worker that runs it (:func:`spawnkit.plugin.run_rank`) in a
process group of its own. It sends the worker's exit status and report back, stops the
worker when the job asks, and kills it when the job's connection ends. Imports only the
standard library until the fork.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
from multiprocessing.connection import Client, Connection

# How long a finished worker's report may still be in the pipe after its group was killed:
# everything that held the pipe is dead by then, so this only covers reading what is there.
REPORT_DRAIN_WAIT = 10.0
# For the tests alone: a task that keeps its worker when the job's connection ends stands for
# a node that does not see the job die (a network partition), which the keeper's scancel ends.
KEEP_WORKER_ENV = "SPAWNKIT_SLURM_TEST_TASK_KEEPS_WORKER"


# A task of a Slurm step runs on Linux (type checks for other platforms stop here).
assert sys.platform == "linux"


def _hello() -> tuple[int, dict[str, str]]:
    port = 0
    if os.environ.get("SLURM_PROCID") == "0":  # MASTER_PORT: a free port on rank 0's node
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
    keys = ("SLURM_PROCID", "SLURM_LOCALID", "SLURMD_NODENAME", "SLURM_JOB_ID", "SLURM_STEP_ID")
    return port, {key: os.environ.get(key, "") for key in keys}


def _run(path: list[str], data: bytes, report_w: int) -> int:
    """In the forked worker: run the rank, write the pickled report, return the status."""
    sys.path.extend(p for p in path if p not in sys.path)
    from spawnkit import plugin

    spec = pickle.loads(data)
    report = plugin.run_rank(spec)
    out = memoryview(pickle.dumps(report, 5))
    while out:
        out = out[os.write(report_w, out) :]
    return int(report.status)


def _fork_worker(conn: Connection, path: list[str], data: bytes) -> tuple[int, int]:
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setpgid(0, 0)  # a stop takes along whatever the rank started
            # The job must see this task's end as the connection's end, not the worker's.
            conn.close()
            os.close(report_r)
            devnull = os.open(os.devnull, os.O_RDONLY)  # the rank sees an empty stdin
            os.dup2(devnull, 0)
            os.close(devnull)
            status = _run(path, data, report_w)
        except BaseException:  # noqa: BLE001 - reported by the exit status and stderr
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(report_w)
    try:
        os.setpgid(pid, pid)
    except OSError:  # it did so itself, or has ended already
        pass
    return pid, report_r


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except OSError:
        pass


def _read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 20):
        into += chunk


def _follow_job(conn: Connection, pid: int) -> None:
    """Stops the worker as the job asks; kills it once the job's connection is gone."""
    while True:
        try:
            force = conn.recv()
        except (EOFError, OSError):
            if os.environ.get(KEEP_WORKER_ENV) != "1":
                _signal_group(pid, signal.SIGKILL)
            return
        _signal_group(pid, signal.SIGKILL if force else signal.SIGTERM)


def main() -> int:
    line = sys.stdin.readline().split()
    if len(line) != 3:
        print("spawnkit slurm task: no address, port and secret on stdin", file=sys.stderr)
        return 2
    conn = Client((line[0], int(line[1])), authkey=bytes.fromhex(line[2]))
    conn.send(_hello())
    try:
        message = conn.recv()
    except (EOFError, OSError):  # the job ended, or stopped before starting this rank
        return 0
    if message is None:
        return 0
    path, data = message
    pid, report_r = _fork_worker(conn, path, data)
    threading.Thread(target=_follow_job, args=(conn, pid), daemon=True).start()
    report = bytearray()
    # Read as it comes: a report bigger than the pipe would block its writer otherwise.
    reader = threading.Thread(target=_read_all, args=(report_r, report), daemon=True)
    reader.start()
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    _signal_group(pid, signal.SIGKILL)  # whatever the rank left in its group
    reader.join(REPORT_DRAIN_WAIT)
    try:
        conn.send((status, bytes(report) if not reader.is_alive() else b""))
    except OSError:  # the job is gone
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
