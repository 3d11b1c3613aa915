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
├── SpawnTimeoutError (TimeoutError)         the job's deadline passed; its ranks were stopped
└── ProcessException                         a rank failed (torch.multiprocessing's names)
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
    "UnknownBackendError",
    "UnknownOptionError",
    "UnknownWatchError",
    "WatchUnavailableError",
]

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._report import JobReport


class SpawnError(Exception):
    """Base class of every exception spawnkit raises."""


class ConfigError(SpawnError, ValueError):
    """The call to spawnkit was wrong; nothing was started."""


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


class LaunchError(SpawnError):
    """A backend could not start a worker; the ranks already started were stopped."""


class JobTerminatedError(SpawnError):
    """``join()`` or ``results()`` after ``terminate()`` stopped ranks that had not finished."""


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
    """

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
        super().__init__(msg)
        self.msg = msg
        self.error_index = error_index
        self.pid = pid
        self.failures: list[ProcessException] = [self]
        # The job's failure report: set on the exception join() raises.
        self.report: JobReport | None = None

    @property
    def error_pid(self) -> int | None:
        return self.pid

    def _args(self) -> tuple[Any, ...]:
        return (self.msg, self.error_index, self.pid)

    def __reduce__(self) -> Any:
        state = {k: v for k, v in self.__dict__.items() if k not in ("msg", "error_index", "pid")}
        return (type(self), self._args(), state)


class ProcessRaisedException(ProcessException):
    """The rank raised an exception.

    ``remote_traceback`` is the worker's traceback as text, ``exception`` the original
    exception object when it could be pickled (else ``None``); the original is also this
    exception's ``__cause__``, so ``except ValueError`` code can find it.
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

    def _args(self) -> tuple[Any, ...]:
        return (self.msg, self.error_index, self.pid, self.remote_traceback, self.exception)

    def __reduce__(self) -> Any:
        cls, args, state = super().__reduce__()
        state.pop("remote_traceback", None)
        state.pop("exception", None)
        return (cls, args, state)


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

    def _args(self) -> tuple[Any, ...]:
        return (self.msg, self.error_index, self.pid, self.exit_code, self.signal_name)

    def __reduce__(self) -> Any:
        cls, args, state = super().__reduce__()
        state.pop("exit_code", None)
        state.pop("signal_name", None)
        return (cls, args, state)


# As users write them, and as the interpreter prints them: spawnkit.ConfigError, not
# spawnkit._errors.ConfigError. Pickles by that name too (spawnkit resolves it on demand).
for _name in __all__:
    globals()[_name].__module__ = "spawnkit"
del _name
