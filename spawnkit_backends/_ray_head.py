"""A local Ray cluster that lives exactly as long as the job's process wants it.

``python -m spawnkit_backends._ray_head NUM_CPUS`` runs in a session of its own: it starts a
Ray head node with ``ray start`` (every Ray process then belongs to its process group),
prints ``READY host:port`` once the node runs, and waits for its standard input to end. That
happens when the job closes it, and when the job's process dies however it dies (SIGKILL
included): the pipe's only writer is gone. It then stops the whole group: SIGTERM, a grace
period, SIGKILL. Ray's own start leaves agent processes that outlive a killed driver; this
process leaves none.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Process groups and sessions: POSIX only (the backend says so on Windows).
assert sys.platform != "win32"

GRACE = 5.0
PR_SET_CHILD_SUBREAPER = 36


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _become_subreaper() -> None:
    # Ray's daemons are re-parented here when `ray start` exits, so this process can reap
    # them and tell when the group is empty.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _members(pgid: int) -> bool:
    """Whether the group has a member other than this process (zombies reaped first)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: trust the group's signal
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _stop_group() -> None:
    pgid = os.getpgid(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        pass
    deadline = time.monotonic() + GRACE
    while _members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    sys.stdout.flush()
    os.killpg(pgid, signal.SIGKILL)  # this process too: its work is done


def main() -> None:
    num_cpus = int(sys.argv[1])
    if os.getpgid(0) != os.getpid():
        os.setsid()
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the job's terminal is not ours to obey
    _become_subreaper()
    port = _free_port()
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    command = [
        ray if os.path.exists(ray) else "ray",
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    try:
        # A file, not a pipe: Ray's daemons would inherit a pipe and hold it open for good.
        with tempfile.TemporaryFile() as errors:
            started = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                check=False,
            )
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()[-5:]
        if started.returncode != 0:
            why = " | ".join(said) or "no message"
            print(f"FAILED ray start exited with status {started.returncode}: {why}", flush=True)
        else:
            print(f"READY 127.0.0.1:{port}", flush=True)
            while sys.stdin.buffer.read(4096):  # until the job closes it, or dies
                pass
    finally:
        _stop_group()


if __name__ == "__main__":
    main()
