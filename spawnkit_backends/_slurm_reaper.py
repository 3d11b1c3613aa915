"""The ``slurm`` backend's keeper of srun: ``python -m spawnkit_backends._slurm_reaper FD NAME
JOBID -- SRUN...``.

The job starts it in a session of its own (no signal of the job's terminal or process group
reaches it), and it starts srun as its own child, handing on its stdin (the tasks' one line)
and stderr (the job relays it). It is a child subreaper (Linux's ``PR_SET_CHILD_SUBREAPER``):
srun forks a helper that outlives srun for a moment (its "shepherd"), and whatever srun leaves
is reparented here and reaped here, not by the job's process or init. It exits with srun's
status once srun and everything it left are reaped.

``FD`` is a pipe from the job: the job writes ``step JOBID.STEPID`` once the step runs. Its
end of file while srun still runs means "end the step": the job closed it on purpose (the
step did not end by itself in time), or the job's process died (SIGKILL included, or its
whole process group, which leaves srun's own clean-up undone). Either way the keeper cancels
the step with ``scancel`` (before its id was known, the job it asked for, by its unique
``NAME``; an empty ``JOBID`` means the job asked for an allocation of its own), asks srun to
end, and kills it past a bound. Standard library only.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

# scancel asks slurmctld; a controller that does not answer in this time is not waited for.
SCANCEL_WAIT = 30.0
# How long srun may take to exit once its step was cancelled (it then has nothing to wait
# for but Slurm's answer), before it is killed.
SRUN_EXIT_WAIT = 10.0
# How long what srun left (its shepherd, which ends when srun's pipe to it does) may live on
# after srun, before it is killed.
LEFTOVER_WAIT = 10.0
# Linux's prctl(PR_SET_CHILD_SUBREAPER).
PR_SET_CHILD_SUBREAPER = 36


# Slurm runs on Linux alone, and so does its keeper (type checks for other platforms stop here).
assert sys.platform == "linux"


def _become_subreaper() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _scancel(*args: str) -> None:
    try:
        subprocess.run(
            ["scancel", "--quiet", *args],  # noqa: S607 - Slurm's tools are found on PATH
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=SCANCEL_WAIT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass


def _cancel(name: str, allocation: str, step: str | None) -> None:
    if step is not None:
        # The signal ends the tasks now; the cancel ends the step (and a job of our own).
        _scancel("--signal=KILL", step)
        _scancel(step if allocation else step.split(".")[0])
    elif not allocation:  # still pending, or starting: the job carries our unique name
        _scancel(f"--name={name}", f"--user={os.getuid()}")


def _children() -> list[int]:
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def _reap(srun: int, status: int | None) -> tuple[int | None, bool]:
    """Reaps every ended child; says srun's status once it ended, and whether any is left."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status, False
        if pid == 0:
            return status, True
        if pid == srun:
            status = os.waitstatus_to_exitcode(wait_status)


class _Keeper:
    def __init__(self, control: int, name: str, allocation: str, srun: int) -> None:
        self.control: int | None = control
        self.name = name
        self.allocation = allocation
        self.srun = srun
        self.step: str | None = None
        self.pending = b""
        self.status: int | None = None  # srun's, once reaped
        self.kill_at: float | None = None  # when srun, asked to end, is killed
        self.leftover_at: float | None = None  # when whatever srun left is killed

    def read_control(self, selector: selectors.BaseSelector) -> None:
        assert self.control is not None
        chunk = os.read(self.control, 4096)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            word, _, value = line.decode().strip().partition(" ")
            if word == "step":
                self.step = value
        if chunk:
            return
        selector.unregister(self.control)  # before the close: epoll forgets by descriptor
        os.close(self.control)
        self.control = None
        if self.status is None:  # the job's end came before srun's: end the step
            _cancel(self.name, self.allocation, self.step)
            try:
                os.kill(self.srun, signal.SIGTERM)  # srun's own cancel of a pending request
            except OSError:
                pass
            self.kill_at = time.monotonic() + SRUN_EXIT_WAIT

    def reap(self) -> bool:
        """Reaps what ended, kills what is past its bound; says whether any child is left."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                break
            if pid == self.srun:
                self.status = os.waitstatus_to_exitcode(wait_status)
        now = time.monotonic()
        if self.status is None:
            if self.kill_at is not None and now >= self.kill_at:
                os.kill(self.srun, signal.SIGKILL)  # not reaped: the pid is still srun's
                self.kill_at = None
        elif self.leftover_at is None:
            self.leftover_at = now + LEFTOVER_WAIT
        elif now >= self.leftover_at:
            for pid in _children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.leftover_at = now + LEFTOVER_WAIT
        return True

    def timeout(self) -> float | None:
        bounds = [t for t in (self.kill_at, self.leftover_at) if t is not None]
        return max(0.0, min(bounds) - time.monotonic()) if bounds else None


def main() -> int:
    control, name, allocation = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    command = sys.argv[5:]
    os.set_inheritable(control, False)  # the job's pipe is the keeper's alone, never srun's
    # The job may start the keeper while it holds its own signals (a rank's start): the
    # keeper's SIGCHLD, and srun's signals, must arrive.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _become_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
    keeper = _Keeper(control, name, allocation, os.posix_spawnp(command[0], command, os.environ))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the tasks' line is srun's alone to read
    os.close(devnull)
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ)
    selector.register(control, selectors.EVENT_READ)
    while keeper.reap():
        for key, _ in selector.select(keeper.timeout()):
            if key.fd == wake_r:
                os.read(wake_r, 4096)
            else:
                keeper.read_control(selector)
    status = keeper.status
    if status is None:
        return 1
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
