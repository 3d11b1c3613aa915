"""Every exception spawnkit raises, in one tree.

SpawnError
├── ConfigError (ValueError)                 bad input, raised before any process starts
│   ├── InvalidArgumentError (TypeError)     wrong type: fn not callable, args not a sequence
│   │   ├── NotPicklableError                fn or args cannot travel to the chosen backend
│   │   └── UnknownOptionError               an option the backend does not take
│   ├── UnknownBackendError (LookupError)    no backend of that name is installed
│   ├── BackendUnavailableError              installed, but cannot run on this platform
│   ├── UnknownWatchError (LookupError)      no parent watch of that name
│   ├── WatchUnavailableError                the watch cannot run here
│   └── PluginError                          a plugin failed to load or conflicts with another
├── LaunchError                              a backend failed to start a worker
├── JobTerminatedError                       join() after terminate() stopped unfinished ranks
├── StopError                                a rank could not be signalled to stop: it still runs
├── SpawnTimeoutError (TimeoutError)         the job's deadline passed; its ranks were stopped
└── ProcessException                         a rank failed (torch.multiprocessing's names;
    │                                        torch's classes too once torch is loaded)
    ├── ProcessRaisedException               the rank raised; carries the remote traceback
    └── ProcessExitedException               the rank exited non-zero or died from a signal
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "InvalidArgumentError",
    "JobTerminatedError",
    "LaunchError",
    "NotPicklableError",
    "PluginError",
    "ProcessException",
    "ProcessExitedException",
    "ProcessRaisedException",
    "RemoteTraceback",
    "SpawnError",
    "SpawnTimeoutError",
    "StopError",
    "UnknownBackendError",
    "UnknownOptionError",
    "UnknownWatchError",
    "WatchUnavailableError",
]

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing itself is not imported: workers import this module
    from collections.abc import Callable
    from typing import Any

    from ._report import JobReport


class SpawnError(Exception):
    """Base class of every exception spawnkit raises."""


class ConfigError(SpawnError, ValueError):
    """The call to spawnkit was wrong; nothing was started.

    ``parameter`` names the argument of :func:`spawnkit.spawn` at fault, when one is (the
    ``spawnkit`` command names its flag instead).
    """

    def __init__(self, message: str = "", parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class InvalidArgumentError(ConfigError, TypeError):
    """An argument has the wrong type; nothing was started."""


class NotPicklableError(InvalidArgumentError):
    """``fn`` or one of ``args`` cannot be pickled for a backend that needs to pickle it."""


class UnknownOptionError(InvalidArgumentError):
    """A keyword option that the chosen backend does not accept."""


class UnknownBackendError(ConfigError, LookupError):
    """No installed backend has the requested name."""


class BackendUnavailableError(ConfigError):
    """The backend is installed but cannot run here; ``reason`` says why."""

    def __init__(self, message: str, backend: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.reason = reason

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.backend, self.reason))


class UnknownWatchError(ConfigError, LookupError):
    """No parent watch has the requested name."""


class WatchUnavailableError(ConfigError):
    """The parent watch cannot run on this platform; the message says why."""


class PluginError(ConfigError):
    """A plugin failed to load, has a malformed hook, or conflicts with another plugin."""


class NoMainGuard(ConfigError):
    """A worker's import of the job's main script called ``spawn()``: the script has no
    ``if __name__ == "__main__":`` guard. Raised in the worker; the parent raises a plain
    :class:`ConfigError` with :func:`no_main_guard_message` in its place."""


def no_main_guard_message(where: str) -> str:
    """What is wrong, and the fix, when the script at ``where`` lacks its main guard."""
    return (
        f"spawnkit.spawn() was called while a worker imported the job's main module "
        f"({where}) to find the job's function; without a guard the job would start again "
        "in every worker. Put the code that starts the job under "
        "`if __name__ == \"__main__\":`, or use backend='fork'"
    )


class LaunchError(SpawnError):
    """A backend could not start a worker; the ranks already started were stopped."""


class JobTerminatedError(SpawnError):
    """``join()`` or ``results()`` after ``terminate()`` stopped ranks that had not finished."""


class StopError(SpawnError):
    """Stopping the job failed: the system refused to let this process signal a rank.

    ``rank`` and ``pid`` name the first such rank, ``errno`` is the system's answer
    (``errno.EPERM``: the rank runs as a user this process may not signal), ``ranks`` lists
    every rank that could not be stopped. Those ranks still run; the job still waits for them.
    """

    def __init__(
        self,
        msg: str,
        rank: int = -1,
        pid: int | None = None,
        errno: int = 0,
        ranks: tuple[int, ...] = (),
    ) -> None:
        super().__init__(msg)
        self.rank = rank
        self.pid = pid
        self.errno = errno
        self.ranks = tuple(ranks) or (rank,)

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.rank, self.pid, self.errno, self.ranks))


class SpawnTimeoutError(SpawnError, TimeoutError):
    """The job's ``timeout`` passed before every rank finished; spawnkit stopped the rest.

    ``timeout`` is the deadline in seconds, ``running`` the ranks that were still running
    then, and ``report`` the job's :class:`~spawnkit.JobReport`.
    """

    def __init__(self, msg: str, timeout: float = 0.0, running: tuple[int, ...] = ()) -> None:
        super().__init__(msg)
        self.timeout = timeout
        self.running = tuple(running)
        self.report: JobReport | None = None

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.timeout, self.running), {"report": self.report})


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker, chained as its ``__cause__``.

    ``tb`` holds the text. Chained under a :class:`ProcessRaisedException`, whose message
    already shows that text, it prints as a pointer to it, so that a failure printed whole
    shows the worker's traceback once.
    """

    def __init__(self, tb: str, shown_by: str = "") -> None:
        super().__init__(tb)
        self.tb = tb
        self.shown_by = shown_by

    def __str__(self) -> str:
        if self.shown_by:
            return f"the traceback of {self.shown_by} is in the message below"
        return "\n\n" + self.tb

    def __reduce__(self) -> Any:
        return (type(self), (self.tb, self.shown_by))


class ProcessException(SpawnError):
    """A rank of the job failed.

    ``error_index`` is the failing rank, ``pid`` (alias ``error_pid``) its process id, and
    ``failures`` lists every rank that failed on its own, in the order spawnkit saw them;
    ranks that spawnkit stopped after the first failure are never listed.

    In a program that has imported torch, every instance is also an instance of torch's
    class of the same name (``torch.multiprocessing.ProcessRaisedException``...), so code
    written for ``torch.multiprocessing`` (``torch.distributed.elastic``, accelerate,
    Lightning) catches it; its ``str()``, ``args`` and fields are what torch's would be.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # With torch loaded, an instance of a class derived from this one and torch's
        # namesake, so that code written for torch.multiprocessing catches it (see _torch).
        # Every instance is made here: raised by a job, by the program, or unpickled.
        made = cls
        if "torch.multiprocessing.spawn" in sys.modules:
            from ._torch import flavoured

            made = flavoured(cls)
        return super().__new__(made, *args, **kwargs)

    def __init__(
        self,
        msg: str,
        error_index: int,
        pid: int | None = None,
        *,
        error_pid: int | None = None,
    ) -> None:
        # torch names the pid `pid` in some versions and `error_pid` in others: take both.
        if pid is None:
            pid = error_pid
        # Not super(): beside torch's class (see __new__) that would be torch's __init__,
        # whose arguments differ. Both end in Exception's, with the message alone as args.
        Exception.__init__(self, msg)
        self.msg = msg
        self.error_index = error_index
        self.pid = pid
        self.failures: list[ProcessException] = [self]
        # The job's failure report: set on the exception join() raises.
        self.report: JobReport | None = None

    # The constructor's arguments, in order; the rest of __dict__ pickles as state.
    _fields: tuple[str, ...] = ("msg", "error_index", "pid")

    @property
    def error_pid(self) -> int | None:
        return self.pid

    def __reduce__(self) -> Any:
        state = {k: v for k, v in self.__dict__.items() if k not in self._fields}
        return (type(self), tuple(getattr(self, f) for f in self._fields), state)


class ProcessRaisedException(ProcessException):
    """The rank raised an exception.

    ``remote_traceback`` is the worker's traceback as text, ``exception`` the original
    exception object when it could be pickled (else ``None``), also this exception's
    ``__cause__``. This is no ``ValueError`` when the rank raised one: test
    ``isinstance(error.exception, ValueError)``.
    """

    def __init__(
        self,
        msg: str,
        error_index: int,
        error_pid: int | None,
        remote_traceback: str = "",
        exception: BaseException | None = None,
    ) -> None:
        super().__init__(msg, error_index, error_pid)
        self.remote_traceback = remote_traceback
        self.exception = exception

    _fields = (*ProcessException._fields, "remote_traceback", "exception")


class ProcessExitedException(ProcessException):
    """The rank exited without raising: a non-zero exit code or a signal.

    ``exit_code`` is the status as ``multiprocessing`` reports it (negative for a signal);
    ``signal_name`` is ``"SIGKILL"``, ``"SIGSEGV"``... or ``None`` for a plain exit.
    """

    def __init__(
        self,
        msg: str,
        error_index: int,
        error_pid: int | None,
        exit_code: int,
        signal_name: str | None = None,
    ) -> None:
        super().__init__(msg, error_index, error_pid)
        self.exit_code = exit_code
        self.signal_name = signal_name

    _fields = (*ProcessException._fields, "exit_code", "signal_name")


class Interrupted(BaseException):
    """Raised by ``join()`` after ``ProcessContext.interrupt()``: a signal to the parent.

    Internal: the job turns it into the stop the signal asks for.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def safe_str(value: object, convert: Callable[[object], object] = str) -> str:
    """``str(value)`` (or ``convert(value)``), never raising: a rank's failure is told, not
    replaced by the failure of its ``__str__`` or ``__repr__``.

    As the traceback module shows such an exception: ``<exception str() failed: ...>``.
    """
    try:
        text = convert(value)
        if isinstance(text, str):
            return text
        why = f"{convert.__name__}() returned {type(text).__name__}, not str"
    except Exception as exc:  # noqa: BLE001 - whatever the user's method raised
        why = type(exc).__name__
        try:
            detail = str(exc)
        except Exception:  # noqa: BLE001 - its own str() failed too: the type says enough
            detail = ""
        if detail:
            why += f": {detail}"
    what = "exception" if isinstance(value, BaseException) else type(value).__name__
    return f"<{what} {convert.__name__}() failed: {why}>"


# As users write them, and as the interpreter prints them: spawnkit.ConfigError, not
# spawnkit._errors.ConfigError. Pickles by that name too (spawnkit resolves it on demand).
for _name in __all__:
    globals()[_name].__module__ = "spawnkit"
del _name
