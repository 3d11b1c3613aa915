"""``jobobject``: Windows; every worker joins a job object with kill-on-close.

The job process holds the only handle to a named job object created with
``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``; each worker opens it by name, puts itself in, and
closes its own handle again. When the job process dies, however it dies, Windows closes
that handle and ends every process in the job object: the workers and every process they
started (children stay in their parent's job object; breaking away is not allowed). There
is no grace period: Windows has no SIGTERM to send first.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .._spec import WorkerSpec

JOB_OBJECT_ASSIGN_PROCESS = 0x0001
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
ERROR_FILE_NOT_FOUND = 2
ERROR_ALREADY_EXISTS = 183


def unavailable_reason() -> str | None:
    """Why this watch cannot run here, or ``None`` when it can."""
    if sys.platform == "win32":
        return None
    else:
        return f"job objects exist only on Windows, not on {sys.platform}"


def _not_here() -> OSError:
    return OSError(f"the jobobject watch cannot run here: {unavailable_reason()}")


# Everything below that touches Windows sits under `sys.platform == "win32"`, so type
# checkers on other platforms skip it instead of reporting Windows-only names.


def _kernel32() -> Any:
    """kernel32 with the prototypes this module calls."""
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
        kernel32.CreateJobObjectW.restype = wintypes.HANDLE
        kernel32.OpenJobObjectW.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.LPCWSTR]
        kernel32.OpenJobObjectW.restype = wintypes.HANDLE
        kernel32.SetInformationJobObject.argtypes = [
            wintypes.HANDLE,
            ctypes.c_int,
            ctypes.c_void_p,
            wintypes.DWORD,
        ]
        kernel32.SetInformationJobObject.restype = wintypes.BOOL
        kernel32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
        kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
        kernel32.GetCurrentProcess.argtypes = []
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
        kernel32.CloseHandle.restype = wintypes.BOOL
        return kernel32
    raise _not_here()


def _last_error() -> int:
    if sys.platform == "win32":
        import ctypes

        return ctypes.get_last_error()
    raise _not_here()


def _error(what: str, code: int) -> OSError:
    if sys.platform == "win32":
        import ctypes

        return OSError(f"{what} failed: {ctypes.FormatError(code)} (Windows error {code})")
    else:
        return _not_here()


def _kill_on_close() -> Any:
    """A ``JOBOBJECT_EXTENDED_LIMIT_INFORMATION`` asking for kill-on-close, nothing else."""
    import ctypes

    class IoCounters(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_ulonglong)
            for name in (
                "ReadOperationCount",
                "WriteOperationCount",
                "OtherOperationCount",
                "ReadTransferCount",
                "WriteTransferCount",
                "OtherTransferCount",
            )
        ]

    class BasicLimitInformation(ctypes.Structure):
        _fields_ = [
            ("PerProcessUserTimeLimit", ctypes.c_int64),
            ("PerJobUserTimeLimit", ctypes.c_int64),
            ("LimitFlags", ctypes.c_uint32),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", ctypes.c_uint32),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", ctypes.c_uint32),
            ("SchedulingClass", ctypes.c_uint32),
        ]

    class ExtendedLimitInformation(ctypes.Structure):
        _fields_ = [
            ("BasicLimitInformation", BasicLimitInformation),
            ("IoInfo", IoCounters),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    info = ExtendedLimitInformation()
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    return info


class JobObjectParent:
    """The job's side: a named kill-on-close job object whose only handle the job holds.

    The handle is not inheritable, so no worker holds it: it closes exactly when the job
    process ends or the job is released.
    """

    name: str
    _handle: Any

    def __init__(self) -> None:
        import ctypes

        kernel32 = _kernel32()
        self.name = f"spawnkit-job-{os.getpid()}-{os.urandom(8).hex()}"
        handle = kernel32.CreateJobObjectW(None, self.name)
        if not handle:
            raise _error("CreateJobObjectW", _last_error())
        if _last_error() == ERROR_ALREADY_EXISTS:
            kernel32.CloseHandle(handle)
            raise OSError(f"a job object named {self.name!r} exists already; try again")
        info = _kill_on_close()
        if not kernel32.SetInformationJobObject(
            handle,
            JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
            ctypes.byref(info),
            ctypes.sizeof(info),
        ):
            error = _error("SetInformationJobObject", _last_error())
            kernel32.CloseHandle(handle)
            raise error
        self._kernel32 = kernel32
        self._handle = handle

    def child_watch(self) -> JobObjectChild:
        return JobObjectChild(self.name)

    def fds(self) -> tuple[int, ...]:
        return ()

    def private_fds(self) -> tuple[int, ...]:
        return ()

    def close(self) -> None:
        # Every worker has ended by now; this ends what they left running.
        if self._handle:
            self._kernel32.CloseHandle(self._handle)
            self._handle = None


class JobObjectChild:
    """The worker's side: join the job object by name, then let go of the handle."""

    name = "jobobject"

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name

    def arm(self, fds: Sequence[int], spec: WorkerSpec, shutdown: Callable[[], None]) -> None:
        kernel32 = _kernel32()
        handle = kernel32.OpenJobObjectW(JOB_OBJECT_ASSIGN_PROCESS, False, self.job_name)
        if not handle:
            code = _last_error()
            if code == ERROR_FILE_NOT_FOUND:
                # The name lives as long as a handle does: the job is gone already.
                shutdown()
                return
            raise _error(f"OpenJobObjectW({self.job_name!r})", code)
        try:
            if not kernel32.AssignProcessToJobObject(handle, kernel32.GetCurrentProcess()):
                raise _error("AssignProcessToJobObject", _last_error())
        finally:
            # Our handle would keep the job object open after the job died. If the job
            # died since we opened it, this close is the last one and ends us at once.
            kernel32.CloseHandle(handle)
