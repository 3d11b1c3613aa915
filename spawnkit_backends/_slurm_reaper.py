"""The ``slurm`` backend's reaper: ``python -m spawnkit_backends._slurm_reaper NAME JOBID``.

Runs in a session of its own, so that it outlives the job's process whatever kills it. The
job tells it on stdin what to end (``srun PID``, ``step JOBID.STEPID``) and, once the step is
over, ``done``. Should stdin end without ``done`` (the job's process died, even of SIGKILL),
it cancels the step (or, before its id was known, the job it asked for, by its unique name)
and kills srun: srun's own clean-up is not enough once its process group was killed. An
empty JOBID means the job asked for an allocation of its own. Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# scancel asks slurmctld; a controller that does not answer in this time is not waited for.
SCANCEL_WAIT = 30.0


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


def main() -> int:
    name, allocation = sys.argv[1], sys.argv[2]
    srun = step = None
    for line in sys.stdin:
        word, _, value = line.strip().partition(" ")
        if word == "done":
            return 0
        if word == "srun":
            # A pidfd names this srun even after the pid is reused (Linux); a pid elsewhere.
            try:
                srun = os.pidfd_open(int(value)) if hasattr(os, "pidfd_open") else -int(value)
            except OSError:  # ended already
                srun = None
        elif word == "step":
            step = value
    # The job's process is gone without ending the step.
    if step is not None:
        # The signal ends the tasks now; the cancel ends the step (and a job of our own).
        _scancel("--signal=KILL", step)
        _scancel(step if allocation else step.split(".")[0])
    elif not allocation:  # still pending, or starting: the job carries our unique name
        _scancel(f"--name={name}", f"--user={os.getuid()}")
    if srun is not None:
        try:
            if srun >= 0:
                signal.pidfd_send_signal(srun, signal.SIGKILL)
            else:
                os.kill(-srun, signal.SIGKILL)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
