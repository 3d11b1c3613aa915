"""What core hands a backend for one rank, and the backend forwards to the child untouched:
the :class:`WorkerSpec`.

Imported in every worker, so it imports nothing beyond the interpreter's own start-up set.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any


# Descriptors the parent holds for its own side of running jobs (result read ends, lifeline
# write ends). A fork child inherits this set along with the descriptors and closes them all
# first: a sibling's lifeline write end kept open here would hide the parent's death.
PARENT_ONLY_FDS: set[int] = set()


def mark_parent_only(*fds: int) -> None:
    """Have ``fds`` closed in every fork of this process: they are the parent's side of a job.

    For a backend's own descriptors (a sentinel pipe, a pidfd, a payload pipe's write end):
    a fork worker of another job, or a child the program forks itself, would otherwise hold
    a copy, and a pipe's end-of-file, which this job's join() may wait for, would never come.
    Call :func:`unmark_parent_only` before closing them.
    """
    PARENT_ONLY_FDS.update(fds)


def unmark_parent_only(*fds: int) -> None:
    """Forget ``fds`` as parent-only; call it before closing them."""
    PARENT_ONLY_FDS.difference_update(fds)


# Long-lived helper processes backends keep for this process's jobs (a fork server).
HELPER_PIDS: set[int] = set()


def mark_helper_process(pid: int) -> None:
    """Note ``pid`` as a helper a backend keeps across jobs (a fork server), not a worker.

    Leak checks (:mod:`spawnkit.testing`) do not count it, though they count its children.
    Call :func:`unmark_helper_process` once it has been waited for.
    """
    HELPER_PIDS.add(pid)


def unmark_helper_process(pid: int) -> None:
    """Forget ``pid`` as a helper process; call it once the process has been reaped."""
    HELPER_PIDS.discard(pid)


class WorkerSpec:
    """Everything one rank needs: who it is, what to run, and which descriptors to keep.

    A backend starts a process that calls :func:`spawnkit.run_worker` with this spec. It must
    make every descriptor in :attr:`fds` available in the child (inherited, passed or
    duplicated) and, when the numbers change on the way, call :meth:`with_fds` with the new
    numbers in the same order. It must not look inside anything else.

    Attributes:
        rank: this worker's index, ``0 <= rank < nprocs``.
        nprocs: number of ranks in the job.
        job_pid: pid of the process that called :func:`spawnkit.spawn`; ``None`` for a
            backend whose workers run elsewhere, where this machine's pids mean nothing.
        parent_pid: pid the worker's direct parent will have. Core sets the job's pid; a
            backend that starts workers through an intermediate process (a fork server)
            replaces it with :meth:`with_parent_pid`, so the watch can tell a real parent
            death from the normal state.
        payload: the pickled ``(fn, args)``, or ``None`` when :attr:`target` carries them.
        target: ``(fn, args)`` unpickled, for backends that do not pickle (fork).
        fds: descriptors to forward: the result channel (a local backend's, see
            :attr:`result_fd`), then the watch's, then the rank's output (see
            :attr:`streams`), then the ones the arguments carry. Empty for a backend whose
            workers run elsewhere.
        watch: the child half of the parent watch (a :class:`spawnkit.plugin.ChildWatch`),
            or ``None``.
        grace_period: seconds a worker gets between SIGTERM and SIGKILL when the parent dies.
        env: environment variables the worker sets before running ``fn``.
        carried: how many of :attr:`fds`, at the end, are descriptors the job's arguments
            use (a queue's pipe, a shared array's file): the pickled job refers to them by
            their place there, and a fork worker keeps them.
        sigmask: the signals the job's starting thread had blocked. Core blocks every signal
            while ranks start, and a new process inherits that; the worker puts this back.
        channel: whether ``fds[0]`` is a result channel (see :meth:`with_result_fd`).
        streams: the standard streams (1, 2) the worker points at :attr:`stream_fds`, in
            that order: its log file, or a pipe to the parent's console.
        faulthandler: whether the worker enables :mod:`faulthandler` (a crash in native
            code then leaves a Python traceback on the rank's stderr).
        deadline: the job's deadline (``spawn(..., timeout=...)``) as a :func:`time.monotonic`
            value of the job's process, or ``None``. A backend bounds every wait of its start
            by it; core reports a start that failed once it passed as a timeout.
    """

    __slots__ = (
        "carried",
        "channel",
        "deadline",
        "env",
        "faulthandler",
        "fds",
        "grace_period",
        "job_pid",
        "nprocs",
        "parent_pid",
        "payload",
        "rank",
        "sigmask",
        "streams",
        "target",
        "watch",
    )

    def __init__(
        self,
        rank: int,
        nprocs: int,
        job_pid: int | None,
        parent_pid: int | None,
        payload: bytes | None,
        target: tuple[Callable[..., Any], tuple[Any, ...]] | None,
        fds: tuple[int, ...],
        watch: Any,  # a ChildWatch or None: not named, as _protocols imports this module
        grace_period: float,
        env: Mapping[str, str],
        carried: int = 0,
        sigmask: tuple[int, ...] | None = None,
        channel: bool = False,
        streams: tuple[int, ...] = (),
        faulthandler: bool = False,
        deadline: float | None = None,
    ) -> None:
        self.rank = rank
        self.nprocs = nprocs
        self.job_pid = job_pid
        self.parent_pid = parent_pid
        self.payload = payload
        self.target = target
        self.fds = fds
        self.watch = watch
        self.grace_period = grace_period
        self.env = dict(env)
        self.carried = carried
        self.sigmask = sigmask
        self.channel = channel
        self.streams = streams
        self.faulthandler = faulthandler
        self.deadline = deadline

    def _replace(self, **changes: Any) -> WorkerSpec:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return WorkerSpec(**fields)

    def with_fds(self, fds: Sequence[int]) -> WorkerSpec:
        """A copy whose descriptors are ``fds``, in the order of :attr:`fds`."""
        fds = tuple(fds)
        if len(fds) != len(self.fds):
            raise ValueError(f"expected {len(self.fds)} descriptors, got {len(fds)}")
        return self._replace(fds=fds)

    def with_payload(self, payload: bytes | None) -> WorkerSpec:
        """A copy carrying ``payload``: for a backend that sends the pickled job its own way
        (``with_payload(None)`` before, ``with_payload(data)`` in the child)."""
        return self._replace(payload=payload)

    def with_env(self, env: Mapping[str, str]) -> WorkerSpec:
        """A copy whose :attr:`env` also holds ``env`` (the backend's rank environment).

        Where both name a variable, ``env`` wins: call it for what the backend alone knows
        (the rank's node, a port it picked).
        """
        return self._replace(env={**self.env, **env})

    def with_parent_pid(self, pid: int) -> WorkerSpec:
        """A copy for a worker whose direct parent is ``pid`` rather than the job."""
        return self._replace(parent_pid=pid)

    def with_result_fd(self, fd: int) -> WorkerSpec:
        """A copy whose result channel is ``fd`` (written by :func:`spawnkit.run_worker`).

        :class:`spawnkit.plugin.LocalBackend` adds it; it comes first in :attr:`fds`.
        """
        if self.channel:
            raise ValueError("this spec has a result descriptor already")
        return self._replace(fds=(fd, *self.fds), channel=True)

    @property
    def result_fd(self) -> int | None:
        """The descriptor a local worker sends its report down, ``None`` for a remote one."""
        return self.fds[0] if self.channel else None

    @property
    def watch_fds(self) -> tuple[int, ...]:
        return self.fds[int(self.channel) : len(self.fds) - self.carried - len(self.streams)]

    @property
    def stream_fds(self) -> tuple[int, ...]:
        """The descriptors standard streams :attr:`streams` are pointed at, in that order."""
        end = len(self.fds) - self.carried
        return self.fds[end - len(self.streams) : end]

    @property
    def carried_fds(self) -> tuple[int, ...]:
        return self.fds[len(self.fds) - self.carried :]

    def __reduce__(self) -> Any:
        return (_rebuild, ({name: getattr(self, name) for name in self.__slots__},))

    def __repr__(self) -> str:
        return f"WorkerSpec(rank={self.rank}, nprocs={self.nprocs}, fds={self.fds})"


def _rebuild(fields: dict[str, Any]) -> WorkerSpec:
    return WorkerSpec(**fields)
