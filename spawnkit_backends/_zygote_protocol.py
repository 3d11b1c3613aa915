"""What the job and its fork server (``_zygote``) say to each other, in one place.

The control socket carries, from the job: the header frame (8-byte length, then a pickle),
then requests of :data:`REQUEST_SIZE` bytes (``struct`` format :data:`REQUEST`: kind, flags,
descriptor count, rank), each with its descriptors attached (``SCM_RIGHTS``): the rank's
status socket, its spec channel, the job's stdout and stderr when :data:`HAS_STDOUT` and
:data:`HAS_STDERR` say so, then the spec's own. From the server: :data:`READY`, or
:data:`FAILED` with the traceback of what it could not import, each followed by an 8-byte
length and that text. A rank's status socket carries its pid, then its exit code (``-N``
for signal N), each a :data:`CODE`. A rank's spec channel carries one frame: the pickled
``(cwd, state, spec)``, ``state`` being the job's :func:`process_state` at its start.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    # umask, (resource, soft, hard) per limit, ignored signals, nice, CPUs, (policy, priority)
    State = tuple[
        int,
        tuple[tuple[int, int, int], ...],
        tuple[int, ...],
        int,
        tuple[int, ...] | None,
        tuple[int, int] | None,
    ]

REQUEST = "!cBHi"
REQUEST_SIZE = 8
FORK = b"F"
HAS_STDOUT, HAS_STDERR = 1, 2
READY, FAILED = b"K", b"E"
CODE = "!i"
# What fits in one SCM_RIGHTS message on every POSIX system spawnkit runs on.
MAX_FDS = 250

# Ignored by every Python interpreter from its start, whatever its parent did: a rank has
# them ignored on every backend, so the job's disposition of them does not travel.
PYTHONS_OWN = ("SIGPIPE", "SIGXFSZ")

_limits: dict[int, str] | None = None  # resource number -> name, found once
_signals: tuple[int, ...] = ()
_umask_seen = 0o022


def limit_names() -> dict[int, str]:
    """Every ``RLIMIT_*`` this system has, by number (aliases once)."""
    global _limits
    if _limits is None:
        import resource

        found: dict[int, str] = {}
        for name in sorted(dir(resource)):
            if name.startswith("RLIMIT_"):
                found.setdefault(getattr(resource, name), name)
        _limits = found
    return _limits


def _umask() -> int:
    global _umask_seen
    try:
        # Read, not set and put back: another thread of the program's may create a file
        # at any moment, and would get the stand-in mask. Linux 4.7 and later, second line.
        fd = os.open("/proc/self/status", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            head = os.read(fd, 512)
        finally:
            os.close(fd)
        start = head.index(b"\nUmask:") + 7
        _umask_seen = int(head[start : head.index(b"\n", start)], 8)
        return _umask_seen
    except (OSError, ValueError):
        pass
    # Elsewhere the only way to read it is to set it: to the one seen last, so that in the
    # usual case (unchanged) nothing changes even for a moment.
    found = os.umask(_umask_seen)
    if found != _umask_seen:
        os.umask(found)
        _umask_seen = found
    return found


def process_state() -> State:
    """What a new process inherits from the one that starts it, and the program can change,
    as this process (this thread, for nice and affinity) has it now.

    The signal mask is not here: the spec carries it. Nor the environment: a job whose
    environment differs gets a server of its own.
    """
    global _signals
    if sys.platform == "win32":  # no fork server there (see unavailable_reason)
        raise OSError("no process state to carry to a fork server on Windows")
    else:  # noqa: RET506 - a platform branch type checkers understand
        import _signal  # type: ignore[import-not-found]  # no stubs; signal.py wraps it
        import resource
        import signal

        if not _signals:
            skip = {getattr(signal, name, None) for name in PYTHONS_OWN}
            _signals = tuple(int(s) for s in signal.valid_signals() if s not in skip)
        # signal.getsignal() turns the answer into an enum by trying, and failing, for every
        # handler that is a function: several times slower, and this runs once a rank.
        getsignal, ignore = _signal.getsignal, int(signal.SIG_IGN)
        getrlimit = resource.getrlimit
        cpus: tuple[int, ...] | None = None
        sched: tuple[int, int] | None = None
        if sys.platform == "linux":  # affinity and scheduling policy a fork inherits: Linux's
            cpus = tuple(sorted(os.sched_getaffinity(0)))
            sched = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        return (
            _umask(),
            tuple((number, *getrlimit(number)) for number in limit_names()),
            tuple(n for n in _signals if isinstance(h := getsignal(n), int) and h == ignore),
            os.getpriority(os.PRIO_PROCESS, 0),
            cpus,
            sched,
        )
