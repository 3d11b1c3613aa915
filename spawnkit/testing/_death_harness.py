"""The parent-death harness: kill a job's process and report what outlived it.

Run as ``python -m spawnkit.testing._death_harness CONFIG_JSON``; prints one JSON object.
It makes itself a child subreaper (Linux), so every process the job leaves behind is
re-parented to it, never to init: it can wait for each one, see strays however deep, and
kill and reap whatever is left, whatever happened. The job's process (the "parent") runs
in a session of its own, like a command started from a shell; its workers report through
a FIFO (see :mod:`spawnkit.testing._death_targets`). The parent runs with faulthandler on
(``-X faulthandler``): when it outlives a wait, the harness sends it SIGABRT and the error
names where its stack was stuck (:func:`spawnkit.testing._hang.describe_hang`), so a
backend method that blocks is named instead of timing the test out.

Modes (``config["mode"]``):

- ``kill``: wait until every worker reports ``armed`` (``holding`` with ``hold``), SIGKILL
  the parent, then wait until every worker and grandchild is gone, and after that until
  nothing at all is left below the harness; ranks of jobs tagged in ``survive`` must
  instead answer a ping after the parent is dead.
- ``thread``: the parent spawns from a thread that exits, then lets the workers finish.
- ``signal``: the parent waits for the job in the foreground; the harness sends it
  ``config["signal"]`` (SIGINT to its whole process group, as a terminal's Ctrl-C does).
- ``cli``: as ``signal``, for ``python -m spawnkit run``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from ._death_targets import posix_only, report
from ._hang import describe_hang
from ._processes import ZOMBIE, become_subreaper, command_line, descendants

__all__ = ["Harness", "HarnessError", "run_harness"]

# Long enough for a loaded 2-core machine to run every worker's SIGTERM cleanup before the
# reaper's SIGKILL; the tests that wait out the whole grace period pay it once each.
GRACE = 2.0
# Slack on top of the grace period for a loaded machine: a bound on correctness, not a
# speed claim (latency is measured in benchmarks/parent_death.py).
SLACK = 8.0
# Internal waits are bounded well below the test's own timeout, so cleanup always runs.
SETUP_TIMEOUT = 40.0
SWEEP_TIMEOUT = 10.0
# How long a stuck parent gets to write its stack and die after SIGABRT.
STACK_TIMEOUT = 10.0


class HarnessError(Exception):
    """The scenario could not be played: the parent failed, or never reported."""


class Harness:
    """One scenario, played once; :meth:`run` returns what happened, as plain data."""

    # Set by run(); declared here, as type checkers for Windows skip its POSIX body.
    fifo: str
    go: str
    events_fd: int
    go_fd: int

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.tmp = config["tmp"]
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {"error": None}
        self.parent: subprocess.Popen[bytes] | None = None
        self.pidfds: dict[int, int] = {}
        self.known: set[int] = set()
        self.subreaper = False
        self._buffer = b""

    # -- the scenario ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            self.subreaper = become_subreaper()
            self.result["subreaper"] = self.subreaper
            # SIGABRT is how a stuck parent is made to show its stack (_where_stuck): no
            # core file for it, nor for anything it started.
            import resource

            _, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
            self.fifo = os.path.join(self.tmp, "events")
            self.go = os.path.join(self.tmp, "go")
            os.mkfifo(self.fifo)
            os.mkfifo(self.go)
            # Read and write, so that neither end ever sees end-of-file while workers come
            # and go, and no open() of these FIFOs ever blocks.
            self.events_fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
            self.go_fd = os.open(self.go, os.O_RDWR | os.O_NONBLOCK)
            try:
                self._start_parent()
                getattr(self, f"_mode_{self.config['mode']}")()
            except HarnessError as exc:
                self.result["error"] = str(exc)
            finally:
                self._cleanup()
            self._drain()
            os.close(self.events_fd)
            os.close(self.go_fd)
            self.result["events"] = self.events
            with open(os.path.join(self.tmp, "parent.out"), "rb") as f:
                self.result["output"] = f.read().decode(errors="replace")[-8000:]
            return self.result

    def _start_parent(self) -> None:
        config = self.config
        worker = {
            "fifos": [self.fifo],
            "children": config.get("children", 0),
            "child_sigterm": config.get("child_sigterm", "handler"),
            "sigterm": config.get("sigterm", ["handler"]),
        }
        if config["mode"] == "cli":
            job = config["jobs"][0]
            command = [
                sys.executable,
                "-X",
                "faulthandler",  # a SIGABRT dumps its stack: see _where_stuck
                "-m",
                "spawnkit",
                "run",
                "-n",
                str(job["nprocs"]),
                "-b",
                job["backend"],
                "-w",
                job["watch"],
                "spawnkit.testing._death_targets:cli_worker",
                json.dumps(worker),
            ]
        else:
            parent = {**config, "worker": worker, "go": self.go, "fifo": self.fifo}
            command = [
                sys.executable,
                "-X",
                "faulthandler",  # a SIGABRT dumps its stack: see _where_stuck
                "-c",
                "from spawnkit.testing._death_harness import parent_main; parent_main()",
                json.dumps(parent),
            ]
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        with open(os.path.join(self.tmp, "parent.out"), "wb") as out:
            self.parent = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.tmp,  # not the caller's: see run_harness
                env=env,
            )
        self.known.add(self.parent.pid)

    def _expected_workers(self) -> int:
        return sum(job["nprocs"] for job in self.config["jobs"])

    def _mode_kill(self) -> None:
        event = "holding" if self.config.get("hold") else "armed"
        armed = self._wait_for(event, self._expected_workers())
        survive = set(self.config.get("survive", ()))
        tags = {e["pid"]: e.get("tag", "") for e in self._events("armed")}
        watched: list[int] = []
        pinged: list[int] = []
        for e in armed:
            family = [e["pid"], *e.get("children", [])]
            (pinged if tags.get(e["pid"]) in survive else watched).extend(family)
        self._open_pidfds(watched + pinged)
        assert self.parent is not None
        started = time.monotonic()
        self.parent.kill()
        self.parent.wait()
        self.result["parent_returncode"] = self.parent.returncode
        if pinged:
            self.result["alive"] = self._ping(pinged, started + self.config["bound"])
        remaining, elapsed = self._wait_gone(watched, started + self.config["bound"])
        self.result["remaining"] = remaining
        self.result["elapsed"] = elapsed
        if not pinged and not remaining:
            self.result["strays"] = self._wait_no_descendants(started + self.config["bound"])

    def _mode_thread(self) -> None:
        self._wait_parent_exit(time.monotonic() + SETUP_TIMEOUT)

    def _mode_signal(self) -> None:
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            armed = self._wait_for("armed", self._expected_workers())
            family = [pid for e in armed for pid in [e["pid"], *e.get("children", [])]]
            self._open_pidfds(family)
            assert self.parent is not None
            started = time.monotonic()
            signum = signal.Signals[self.config["signal"]]
            if signum == signal.SIGINT:
                os.killpg(self.parent.pid, signum)  # what a terminal's Ctrl-C does
            else:
                os.kill(self.parent.pid, signum)
            if self.config.get("twice"):
                # Once every worker reported its SIGTERM, the parent is in the middle of the
                # graceful stop: a second signal now is the impatient user's second Ctrl-C.
                self._wait_for("cleanup", len(armed))
                os.killpg(self.parent.pid, signum)
            self._wait_parent_exit(started + self.config["bound"])
            remaining, elapsed = self._wait_gone(family, started + self.config["bound"])
            self.result["remaining"] = remaining
            self.result["elapsed"] = elapsed
            if not remaining:
                self.result["strays"] = self._wait_no_descendants(started + self.config["bound"])

    _mode_cli = _mode_signal

    # -- waiting -----------------------------------------------------------------------

    def _events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.events_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            self.events.append(event)
            for key in ("pid",):
                if isinstance(event.get(key), int):
                    self.known.add(event[key])
            self.known.update(event.get("children", []))

    def _wait_for(self, name: str, count: int) -> list[dict[str, Any]]:
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            deadline = time.monotonic() + SETUP_TIMEOUT
            poller = select.poll()
            poller.register(self.events_fd, select.POLLIN)
            assert self.parent is not None
            while True:
                self._drain()
                found = self._events(name)
                if len(found) >= count:
                    return found
                if self.parent.poll() is not None:
                    self._drain()
                    raise HarnessError(
                        f"the parent exited ({self.parent.returncode}) after {len(found)} of "
                        f"{count} {name!r} reports"
                    )
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"only {len(found)} of {count} workers reported {name!r}"
                        + self._where_stuck()
                    )
                poller.poll(20)

    def _wait_parent_exit(self, deadline: float) -> None:
        assert self.parent is not None
        try:
            self.parent.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise HarnessError("the parent did not exit in time" + self._where_stuck()) from None
        self.result["parent_returncode"] = self.parent.returncode

    def _where_stuck(self) -> str:
        """``"; it was stuck in ..."`` for a parent still running when it should not be.

        It is sent SIGABRT, which its faulthandler (``-X faulthandler``) answers by writing
        every thread's stack to its output before it dies; the line names the innermost
        frame outside spawnkit's core: the backend's method that blocks, as a rule.
        """
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            assert self.parent is not None
            if self.parent.poll() is not None:
                return ""
            self.parent.send_signal(signal.SIGABRT)
            try:
                self.parent.wait(STACK_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass  # _cleanup kills it; what it wrote so far is still worth reading
            with open(os.path.join(self.tmp, "parent.out"), "rb") as f:
                text = f.read().decode(errors="replace")
            return f"; it was stuck in {describe_hang(text)}"

    def _open_pidfds(self, pids: list[int]) -> None:
        # Opened while every one of them is known alive (each is blocked, having reported),
        # so a pidfd names exactly that process however soon its pid is reused.
        for pid in pids:
            if hasattr(os, "pidfd_open"):
                try:
                    self.pidfds[pid] = os.pidfd_open(pid)
                except OSError as exc:
                    raise HarnessError(f"pidfd_open({pid}) failed: {exc}") from None

    def _gone(self, pid: int) -> bool:
        fd = self.pidfds.get(pid)
        if fd is not None:
            return bool(select.select([fd], [], [], 0)[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _reap(self) -> None:
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return

    def _wait_gone(self, pids: list[int], deadline: float) -> tuple[list[int], float | None]:
        """Wait until every pid has exited; ``(still running, seconds until the last)``."""
        started = deadline - self.config["bound"]
        remaining = list(pids)
        fds = [self.pidfds[p] for p in pids if p in self.pidfds]
        while True:
            remaining = [p for p in remaining if not self._gone(p)]
            if not remaining:
                return [], time.monotonic() - started
            left = deadline - time.monotonic()
            if left <= 0:
                return remaining, None
            if len(fds) == len(pids):
                select.select([self.pidfds[p] for p in remaining], [], [], left)
            else:
                self._reap()
                time.sleep(0.005)

    def _living_descendants(self) -> dict[int, str]:
        self._reap()
        return {pid: state for pid, state in descendants().items() if state != ZOMBIE}

    def _wait_no_descendants(self, deadline: float) -> list[dict[str, Any]]:
        """Wait until nothing at all runs below the harness; describe what still does."""
        if not self.subreaper:
            return []  # orphans went to init: out of sight
        while True:
            left = self._living_descendants()
            if not left or time.monotonic() > deadline:
                return [{"pid": pid, "cmdline": _cmdline(pid)} for pid in sorted(left)]
            time.sleep(0.01)

    def _ping(self, pids: list[int], deadline: float) -> list[int]:
        """Ask each pid to answer (SIGUSR1); return those that did, all after the parent died."""
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            before = len(self._events("alive"))
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
            poller = select.poll()
            poller.register(self.events_fd, select.POLLIN)
            while True:
                self._drain()
                answered = {e["pid"] for e in self._events("alive")[before:]}
                if answered >= set(pids) or time.monotonic() > deadline:
                    return sorted(answered & set(pids))
                poller.poll(20)

    # -- cleanup -----------------------------------------------------------------------

    def _cleanup(self) -> None:
        """Kill and reap everything the scenario started, by process group and by pid."""
        if sys.platform == "win32":
            raise posix_only()
        else:  # noqa: RET506 - a platform branch type checkers understand
            self._drain()
            if self.parent is not None and self.parent.poll() is None:
                self.parent.kill()
                self.parent.wait()
            killed: set[int] = set()
            deadline = time.monotonic() + SWEEP_TIMEOUT
            while time.monotonic() < deadline:
                if self.subreaper:
                    below = set(self._living_descendants())
                else:
                    self._reap()
                    below = {pid for pid in self.known if not self._gone(pid)}
                if not below:
                    break
                for pid in below:
                    try:
                        if os.getpgid(pid) == pid:  # a worker's group: its children with it
                            os.killpg(pid, signal.SIGKILL)
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                killed |= below
                time.sleep(0.01)
            self._reap()
            self.result["swept"] = sorted(killed)
            for fd in self.pidfds.values():
                os.close(fd)
            self.pidfds.clear()


def _cmdline(pid: int) -> str:
    return " ".join(command_line(pid)) or "?"


# -- the job's process -----------------------------------------------------------------


def parent_main() -> None:
    """The "parent": start the configured jobs, then play its part of the mode."""
    import spawnkit

    config = json.loads(sys.argv[1])
    mode = config["mode"]
    fifos = [config["fifo"]]
    if config.get("hold"):
        _hold_watches(config)
    contexts = []

    def start() -> None:
        for job in config["jobs"]:
            worker = {**config["worker"], "tag": job.get("tag", "")}
            if mode == "thread":
                worker["go"] = config["go"]
            contexts.append(
                spawnkit.spawn(
                    _targets().worker,
                    args=(worker,),
                    nprocs=job["nprocs"],
                    join=False,
                    backend=job["backend"],
                    watch=job["watch"],
                    grace_period=config["grace"],
                    **job.get("options", {}),
                )
            )

    if mode == "kill":
        start()
        report(fifos, event="started", pids=[pid for c in contexts for pid in c.pids()])
        _targets().block_forever()
    elif mode == "thread":
        _spawn_from_a_thread_that_exits(config, start)
        go = os.open(config["go"], os.O_WRONLY)
        os.write(go, b"." * sum(len(c.pids()) for c in contexts))
        os.close(go)
        try:
            results = [c.results() for c in contexts]
        except spawnkit.ProcessException as exc:
            report(fifos, event="failed", error=str(exc))
            raise
        report(fifos, event="results", results=results)
    elif mode == "signal":
        _foreground(config, fifos)


def _targets() -> Any:
    from . import _death_targets

    return _death_targets


def _hold_watches(config: dict[str, Any]) -> None:
    # Registered the way a plugin's watch is, under a name of its own.
    import dataclasses

    from .._registry import plugins

    registry = plugins()
    for job in config["jobs"]:
        info = registry.watch(job["watch"])

        def factory(info: Any = info) -> Any:
            return _targets().HeldParent(info.factory(), [config["fifo"]])

        name = f"held-{info.name}"
        registry.watches[name] = dataclasses.replace(info, name=name, factory=factory)
        job["watch"] = name


def _spawn_from_a_thread_that_exits(config: dict[str, Any], start: Any) -> None:
    """Spawn from a thread, wait until every worker armed, end the thread for good."""
    if sys.platform == "win32":
        raise posix_only()
    else:  # noqa: RET506 - a platform branch type checkers understand
        own = os.path.join(config["tmp"], "parent-events")
        os.mkfifo(own)
        events = os.open(own, os.O_RDWR)
        config["worker"]["fifos"] = [*config["worker"]["fifos"], own]
        expected = sum(job["nprocs"] for job in config["jobs"])
        native: list[int] = []

        def run() -> None:
            native.append(threading.get_native_id())
            start()
            # The thread ends only after the watches are armed: PR_SET_PDEATHSIG fires for the
            # exit of the thread that started a worker, and that is the trap to walk into.
            seen = b""
            while seen.count(b'"armed"') < expected:
                seen += os.read(events, 4096)

        thread = threading.Thread(target=run, name="short-lived-spawner")
        thread.start()
        thread.join()
        os.close(events)
        # join() returns before the kernel is done with the thread; the parent-death signal
        # goes out when it is, and only then is the task gone from /proc.
        task = f"/proc/self/task/{native[0]}"
        deadline = time.monotonic() + SETUP_TIMEOUT
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.001)
        report([config["fifo"]], event="thread-gone", tid=native[0])


def _foreground(config: dict[str, Any], fifos: list[str]) -> None:
    import spawnkit

    from ._processes import ZOMBIE, descendants, infrastructure_pids

    def live_children() -> list[int]:
        return sorted(
            pid
            for pid, state in descendants(exclude=infrastructure_pids()).items()
            if state != ZOMBIE
        )

    if config.get("parent_handler"):
        me = os.getpid()

        def handler(signum: int, frame: Any) -> None:
            if os.getpid() != me:
                # A fork worker inherits this handler, as every fork child does; there it
                # plays the part of spawnkit's own.
                from .._child import Terminated

                raise Terminated
            report(fifos, event="parent-handler", live_children=live_children())
            sys.exit(7)

        signal.signal(signal.SIGTERM, handler)
    job = config["jobs"][0]
    try:
        spawnkit.spawn(
            _targets().worker,
            args=({**config["worker"], "tag": job.get("tag", "")},),
            nprocs=job["nprocs"],
            backend=job["backend"],
            watch=job["watch"],
            grace_period=config["grace"],
            **job.get("options", {}),
        )
    except KeyboardInterrupt:
        report(
            fifos,
            event="interrupted",
            sigint_restored=signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            sigterm_restored=signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
            live_children=live_children(),
        )
        raise


def run_harness(
    folder: str | os.PathLike[str],
    jobs: Sequence[dict[str, Any]],
    mode: str = "kill",
    *,
    grace: float = GRACE,
    timeout: float = 90.0,
    **options: Any,
) -> dict[str, Any]:
    """Play one scenario in a harness process; return what it saw (see the module's doc).

    ``folder``: an empty directory for the FIFOs and the job's output. ``jobs``:
    ``{"backend", "watch", "nprocs", "tag"}`` each, and the backend's ``"options"`` if any,
    started in order. Other options go to
    the harness and the workers: ``children``, ``child_sigterm``, ``sigterm``, ``hold``,
    ``survive``, ``signal``, ``twice``, ``parent_handler``.
    """
    config = {
        "tmp": tempfile.mkdtemp(prefix="harness-", dir=folder),
        "jobs": [dict(job) for job in jobs],
        "mode": mode,
        "grace": grace,
        "bound": grace + SLACK,
        **options,
    }
    command = [sys.executable, "-m", "spawnkit.testing._death_harness", json.dumps(config)]
    # In the scenario's own folder: `-m` and `-c` put the working directory on sys.path, and
    # the caller's (a checkout's root, under tox) would shadow the installed spawnkit.
    harness = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=config["tmp"]
    )
    try:
        out, err = harness.communicate(timeout=timeout)
    except BaseException:
        # SIGTERM, not SIGKILL: the harness then kills and reaps everything it adopted.
        harness.terminate()
        try:
            harness.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            harness.kill()  # its own cleanup hung: at least the harness itself goes
            harness.communicate()
        raise
    if harness.returncode != 0 or not out:
        raise AssertionError(f"the harness failed ({harness.returncode}):\n{err.decode()}")
    result: dict[str, Any] = json.loads(out)
    result["config"] = config
    return result


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    harness = Harness(config)

    def stop(signum: int, frame: Any) -> None:
        raise HarnessError(f"the harness received {signal.Signals(signum).name}")

    # The test's timeout ends the harness with SIGTERM: clean up all the same.
    signal.signal(signal.SIGTERM, stop)
    result = harness.run()
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
