"""How ``fn`` and ``args`` are pickled for a new interpreter: as ``multiprocessing`` does.

The job is pickled with ``multiprocessing``'s ``ForkingPickler`` while a spawning context is
active, exactly as ``Process.start()`` pickles a process's arguments. So what
``multiprocessing`` lets cross into a new process crosses here too: queues, pipes, locks,
events, ``Value``/``Array``, manager proxies, and whatever a library registered with
``ForkingPickler.register`` (torch's tensors in shared memory). The descriptors those
objects carry are recorded and travel with the rank's other descriptors.

A function that a new interpreter cannot import by name (a lambda, a nested function, one
defined in a ``__main__`` that is no file) is sent by value with ``cloudpickle`` when it is
installed.
"""

from __future__ import annotations

import io
import sys
from multiprocessing import context as _mp_context
from multiprocessing.reduction import ForkingPickler
from typing import Any

from ._worker import CarriedFd

__all__ = ["PickledJob", "by_value_reason", "dumps_job"]

PROTOCOL = 5  # every Python spawnkit supports reads it


def by_value_reason(obj: Any, *, remote: bool = False) -> str | None:
    """Why a new interpreter cannot import function or class ``obj`` by name, or ``None``.

    With ``remote``, for a worker on another machine, where the main program's file is
    not: whatever the main program defines goes by value.
    """
    qualname = getattr(obj, "__qualname__", "")
    if "<lambda>" in qualname:
        return "it is a lambda"
    if "<locals>" in qualname:
        return "it is defined inside a function"
    if getattr(obj, "__module__", None) == "__main__":
        if remote:
            return "it is defined in the main program, which a remote worker does not have"
        from ._main import main_reference

        why = main_reference().get("reason")
        return None if why is None else f"it is defined in the main program, and {why}"
    return None


class _Recorder:
    """Stands in for ``multiprocessing``'s spawning Popen while the job is pickled.

    ``DupFd`` (what a queue, pipe or shared array reduces its descriptor to) asks it to
    hand a descriptor to the child: it notes the descriptor, and the pickle refers to it by
    its place in that list; the worker finds it at that place among the spec's descriptors.
    """

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        if fd in self.fds:
            return self.fds.index(fd)
        self.fds.append(fd)
        return len(self.fds) - 1

    DupFd = CarriedFd


class _JobPickler(ForkingPickler):
    def __init__(self, file: io.BytesIO, remote: bool) -> None:
        super().__init__(file, PROTOCOL)
        self.remote = remote
        self.by_value: list[tuple[object, str]] = []

    def reducer_override(self, obj: Any) -> Any:
        if _OLD_SEMLOCKS and isinstance(obj, _semlock_class()):
            _refuse_fork_context(obj)
        if not isinstance(obj, type) and not callable(obj):
            return NotImplemented
        why = by_value_reason(obj, remote=self.remote) if _is_function_or_class(obj) else None
        if why is None:
            return NotImplemented
        try:
            import cloudpickle  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError:
            self.by_value.append((obj, why))
            return NotImplemented  # the plain pickler fails or the check below refuses
        return (_load_by_value, (cloudpickle.dumps(obj, protocol=PROTOCOL),))


# Before 3.11, multiprocessing sends a lock made in a fork context to a new interpreter
# without a word, as the address of a semaphore that exists only in this process's memory:
# the worker crashes (SIGSEGV) on its first use. 3.11 refuses it, in words NotPicklableError
# recognises; spawnkit says the same on the Pythons before.
_OLD_SEMLOCKS = sys.version_info < (3, 11) and sys.platform != "win32"


def _semlock_class() -> type:
    from multiprocessing.synchronize import SemLock

    return SemLock


def _refuse_fork_context(lock: Any) -> None:
    # A fork context unlinks the semaphore's name at once: without one, only a fork has it.
    if lock._semlock.name is None:
        raise RuntimeError(
            "A SemLock created in a fork context is being shared with a process in a spawn "
            "context. This is not supported. Please use the same context to create "
            "multiprocessing objects and Process."
        )


def _is_function_or_class(obj: object) -> bool:
    import types

    return isinstance(obj, (types.FunctionType, type))


def _load_by_value(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)


class PickledJob:
    """The pickled ``(fn, args)``; ``fds`` are the descriptors the pickle refers to."""

    __slots__ = ("by_value_missing", "data", "fds")

    def __init__(
        self, data: bytes, fds: list[int], by_value_missing: list[tuple[object, str]]
    ) -> None:
        self.data = data
        self.fds = tuple(fds)
        self.by_value_missing = by_value_missing

    def with_tracker(self, fd: int) -> PickledJob:
        """This job, pickled with ``tracker=True``, sharing the tracker whose descriptor is
        ``fd``."""
        from ._tracker import PLACE

        fds = list(self.fds)
        fds[PLACE] = fd
        return PickledJob(self.data, fds, self.by_value_missing)


def dumps_job(job: object, *, remote: bool = False, tracker: bool = False) -> PickledJob:
    """Pickle ``job`` as ``multiprocessing`` pickles a new process's arguments.

    ``remote``: for a worker on another machine (see :func:`by_value_reason`). ``tracker``:
    the worker is to share a resource tracker, whose descriptor goes in the place
    ``spawnkit._tracker.PLACE`` holds for it (:meth:`PickledJob.with_tracker`).
    """
    buffer = io.BytesIO()
    pickler = _JobPickler(buffer, remote)
    recorder = _Recorder()
    if tracker:
        from ._tracker import carry

        recorder.fds.append(-1)  # held for the tracker's descriptor
        job = carry(job)
    previous = _mp_context.get_spawning_popen()
    _mp_context.set_spawning_popen(recorder)
    try:
        pickler.dump(job)
    finally:
        _mp_context.set_spawning_popen(previous)
    return PickledJob(buffer.getvalue(), recorder.fds, pickler.by_value)
