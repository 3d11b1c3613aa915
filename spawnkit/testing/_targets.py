"""Worker functions for the conformance suite: module level, so every backend can import them."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn


def block_forever() -> NoReturn:
    """Wait until a signal ends the process; no busy loop, no timeout."""
    while True:
        if hasattr(signal, "pause"):
            signal.pause()
        else:  # Windows
            threading.Event().wait()


def wait_for_own_handler() -> NoReturn:
    """Block forever; a signal with a handler of the target's own always runs it.

    ``signal.pause()`` sleeps on if the signal arrives just before it is entered. spawnkit
    mends that for its own SIGTERM handler; a target that installs its own handler blocks
    on the interpreter's wakeup descriptor instead, which a caught signal always writes to.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    while True:
        os.read(read_end, 64)


def times(rank: int, factor: int) -> int:
    return rank * factor


def echo(rank: int, *args: Any) -> tuple[int, tuple[Any, ...]]:
    return rank, args


def identity(rank: int) -> dict[str, int]:
    if sys.platform == "win32":
        raise OSError("Windows has no process groups")
    else:  # noqa: RET506 - a platform branch type checkers understand
        return {"rank": rank, "pid": os.getpid(), "pgid": os.getpgid(0)}


def loaded_modules(rank: int) -> list[str]:
    return sorted(sys.modules)


def block(rank: int) -> None:
    block_forever()


def rank_environment(rank: int) -> dict[str, str]:
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {name: os.environ.get(name, "") for name in (*names, "SPAWNKIT_KIT_VALUE")}


def write_everywhere(rank: int) -> None:
    """Output by print, by descriptor-level writes, and by a child process."""
    print(f"print {rank}", flush=True)
    os.write(1, f"fd1 {rank}\n".encode())
    os.write(2, f"fd2 {rank}\n".encode())
    subprocess.run([sys.executable, "-c", f"print('child {rank}')"], check=True)


def wait_for_all(rank: int, nprocs: int, directory: str) -> int:
    """Check in, then wait until every rank has: only passes if all run at the same time."""
    folder = Path(directory)
    (folder / f"{rank}.here").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.here"))) < nprocs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank} waited 60 s for {nprocs} ranks to run together")
        time.sleep(0.005)
    return nprocs


def raise_on(rank: int, bad_rank: int, message: str) -> None:
    if rank == bad_rank:
        raise ValueError(message)
    block_forever()


def raise_everywhere(rank: int) -> None:
    raise ValueError(f"rank {rank} failed")


def exit_with(rank: int, code: Any, how: str) -> None:
    if how == "os._exit":
        os._exit(code)
    if how == "raise":
        raise SystemExit(code)
    sys.exit(code)


def interrupt(rank: int) -> None:
    raise KeyboardInterrupt


def kill_self(rank: int, signum: int) -> None:
    import faulthandler

    faulthandler.disable()  # a fork child inherits pytest's: keep its dump out of the log
    os.kill(os.getpid(), signum)
    block_forever()


class UnpicklableError(Exception):
    """Holds a lock, which cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable(rank: int) -> None:
    raise UnpicklableError("the lock stays here")


class NeedsTwoArgsError(Exception):
    """Pickles, but its __init__ cannot be called with the pickled args on the way back."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}+{b}")


def raise_unrebuildable(rank: int) -> None:
    raise NeedsTwoArgsError("left", "right")


def raise_huge(rank: int, size: int) -> None:
    raise ValueError("x" * size)


def big_result(rank: int, size: int) -> tuple[int, str]:
    data = os.urandom(size)
    return len(data), hashlib.sha256(data).hexdigest()


def big_payload(rank: int, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def return_bytes(rank: int, size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def return_unpicklable(rank: int) -> Any:
    return threading.Lock()


def note_sigterm_and_block(rank: int, directory: str) -> None:
    """Survive SIGTERM (after noting it), so only SIGKILL can end this worker."""

    def noted(signum: int, frame: object) -> None:
        (Path(directory) / f"{rank}.sigterm").touch()

    signal.signal(signal.SIGTERM, noted)
    (Path(directory) / f"{rank}.ready").touch()
    wait_for_own_handler()


def cleanup_on_exit(rank: int, directory: str) -> None:
    """Block; a ``finally`` block records that the worker got to clean up."""
    try:
        (Path(directory) / f"{rank}.ready").touch()
        block_forever()
    finally:
        (Path(directory) / f"{rank}.cleaned").touch()


def start_grandchild(rank: int, directory: str) -> None:
    """Start a child that ignores SIGTERM, report its pid, block."""
    start_grandchild_and_then(rank, directory)
    block_forever()


def start_grandchild_and_then(rank: int, directory: str) -> None:
    """Start a child that ignores SIGTERM and report its pid in ``<rank>.grandchild``."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "sys.stdout.write('up\\n'); sys.stdout.flush(); signal.pause()",
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    child.stdout.readline()  # it has installed SIG_IGN
    # Written whole, then renamed: the test reads the pid as soon as the name exists.
    partial = Path(directory) / f"{rank}.grandchild.partial"
    partial.write_text(str(child.pid))
    os.replace(partial, Path(directory) / f"{rank}.grandchild")


def mixed(rank: int, cycle: int) -> int:
    """Fails on odd cycles for rank 1, succeeds otherwise."""
    if cycle % 2 and rank == 1:
        raise RuntimeError(f"cycle {cycle}")
    return rank


def finish_unless(rank: int, blocked_rank: int) -> int:
    if rank == blocked_rank:
        block_forever()
    return rank


def read_stdin(rank: int) -> str:
    return sys.stdin.read() if sys.stdin is not None else ""


# -- descriptors, reporting and signals (the robustness tests) ---------------------------


def close_fds_and_return(rank: int, log: str) -> dict[str, int]:
    """Close every descriptor, then open the user's log under the freed numbers."""
    os.closerange(0, 1024)
    for _ in range(64):  # the result channel's and the watch's numbers are among these
        os.open(log, os.O_WRONLY | os.O_APPEND)
    os.write(0, f"rank {rank} wrote this\n".encode())
    return {"rank": rank}


def descriptors(rank: int) -> list[int]:
    """The descriptors this process has open (without the listing's own)."""
    names = os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
    open_fds = []
    for name in names:
        try:
            os.fstat(int(name))
        except OSError:
            continue
        open_fds.append(int(name))
    return sorted(open_fds)


def _explode(kind: str, text: str) -> NoReturn:
    raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}[kind](text)


class ExplodesOnLoad:
    """Pickles fine; unpickling it raises ``kind`` (SystemExit or KeyboardInterrupt)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, (self.kind, "a value that ends the unpickler"))


class ExplodingError(Exception):
    """An exception whose unpickling raises ``args[0]`` (SystemExit or KeyboardInterrupt)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, (self.args[0], "an error that ends the unpickler"))


def return_exploding(rank: int, kind: str) -> ExplodesOnLoad:
    return ExplodesOnLoad(kind)


def raise_exploding(rank: int, kind: str) -> None:
    raise ExplodingError(kind)


class ReportedAfterTheStopError(Exception):
    """Raised before the stop; its report goes out only once SIGTERM has reached the rank."""

    def __reduce__(self) -> tuple[Any, ...]:
        from spawnkit._signals import sigterm

        (Path(self.args[0]) / "raised").touch()
        deadline = time.monotonic() + 60
        while not sigterm.stop_requested() and time.monotonic() < deadline:
            time.sleep(0.002)
        return (type(self), self.args)


def raise_reported_after_the_stop(rank: int, directory: str, sibling_fails: bool) -> None:
    """Rank 0 raises an error whose report waits for the stop; rank 1 blocks, or fails
    once rank 0 has raised (``sibling_fails``)."""
    if rank == 0:
        raise ReportedAfterTheStopError(directory)
    if sibling_fails:
        deadline = time.monotonic() + 60
        while not (Path(directory) / "raised").exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        raise ValueError("rank 1 failed too")
    block_forever()


def leave_grandchild_and_return(rank: int, directory: str, ignore_sigterm: bool) -> int:
    """Fork a child that stays in this rank's group and sleeps; return at once."""
    if sys.platform == "win32":
        raise OSError("Windows has no fork()")
    else:  # noqa: RET506 - a platform branch type checkers understand
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                if ignore_sigterm:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                os.write(ready_w, b".")
                block_forever()
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)  # its signal setup is done
        os.close(ready_r)
        partial = Path(directory) / f"{rank}.grandchild.partial"
        partial.write_text(str(pid))
        os.replace(partial, Path(directory) / f"{rank}.grandchild")
        return rank


def fail_while_sibling_lingers(rank: int, directory: str, job_pid: int) -> None:
    """Rank 0 fails once rank 1 is ready; rank 1 outlasts the SIGTERM that stop brings,
    sending the job SIGINT as it gets it: a Ctrl-C that certainly falls in the stop."""
    folder = Path(directory)
    if rank == 1:

        def noted(signum: int, frame: object) -> None:
            (folder / "1.sigterm").touch()
            os.kill(job_pid, signal.SIGINT)

        signal.signal(signal.SIGTERM, noted)
        (folder / "1.ready").touch()
        wait_for_own_handler()
    deadline = time.monotonic() + 60
    while not (folder / "1.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    raise ValueError("rank 0 failed")


# -- multiprocessing objects and reducers (the drop-in tests) -----------------------------


def use_multiprocessing_objects(
    rank: int, queue: Any, event: Any, value: Any, array: Any, lock: Any, conn: Any, proxy: Any
) -> int:
    """Touch every kind of multiprocessing object the parent handed over."""
    with lock:
        value.value += rank + 1
    array[rank] = rank * 10
    proxy[rank] = f"rank {rank}"
    queue.put(("queued", rank))
    conn.send(rank)
    if not event.wait(60):
        raise TimeoutError("the parent never set the event")
    return rank


def use_shared_memory(rank: int, segment: Any) -> tuple[str, int | None]:
    """Write to the parent's segment, leave one of the rank's own to the parent, and say
    which resource tracker this process started (``None``: none)."""
    from multiprocessing import resource_tracker, shared_memory

    segment.buf[rank] = rank + 1
    segment.close()
    own = shared_memory.SharedMemory(create=True, size=8)
    own.buf[0] = 100 + rank
    own.close()
    return own.name, resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]


class Reduced:
    """Carries ``value``; a reducer registered with ``ForkingPickler`` says how it travels."""

    def __init__(self, value: Any, via: tuple[str, ...] = ()) -> None:
        self.value = value
        self.via = via


def _rebuild_reduced(value: Any, via: tuple[str, ...]) -> Reduced:
    return Reduced(value, (*via, f"rebuilt in {os.getpid()}"))


def reduce_reduced(obj: Reduced) -> tuple[Any, ...]:
    """The reducer a test registers: every trip leaves a mark in ``via``."""
    return (_rebuild_reduced, (obj.value, obj.via))


def bounce_reduced(rank: int, obj: Reduced) -> Reduced:
    from multiprocessing.reduction import ForkingPickler

    # A worker that uses such a type has imported the library that registers its reducer.
    ForkingPickler.register(Reduced, reduce_reduced)
    return Reduced(obj.value + rank, (*obj.via, f"returned by {os.getpid()}"))


def put_rank(rank: int, queue: Any) -> None:
    queue.put(rank)


def exit_unless(rank: int, code: int) -> None:
    """Rank 0 exits with ``code``; the others block."""
    if rank == 0:
        sys.exit(code)
    block_forever()


def write_to(rank: int, fd: int, text: str) -> bool:
    """Write to a descriptor the parent opened (a number, not an object: inherited only)."""
    os.write(fd, text.encode())
    return True


def stop_own_child(rank: int) -> int | None:
    """Start a fork child that sleeps, stop it with SIGTERM, return its exit code."""
    import multiprocessing

    if sys.platform == "win32":
        raise OSError("fork children exist only on POSIX")
    else:  # noqa: RET506 - a platform branch type checkers understand
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        child.terminate()
        child.join(30)
        code: int | None = child.exitcode
        return code


class _StoppedInDel:
    """Waits in ``__del__`` for the job's SIGTERM: the Terminated raised there is dropped."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __del__(self) -> None:
        self.marker.touch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.001)  # the handler raises Terminated here, where Python drops it


def stopped_inside_del(rank: int, directory: str) -> None:
    """Rank whose SIGTERM lands in a ``__del__``; it must still end on that SIGTERM."""
    obj = _StoppedInDel(Path(directory, f"{rank}.in_del"))
    del obj
    block_forever()


def waiting_unraisable_hook(directory: str) -> Any:
    """An unraisable hook that says it runs, then waits in Python code for the file ``sent``.

    The test sends the rank SIGTERM before it writes ``sent``: the signal reaches the main
    thread (spawnkit's threads block it) while the hook runs, and Python would drop what
    the handler raises there.
    """
    folder = Path(directory)

    def hook(unraisable: Any) -> None:
        (folder / "in_hook").touch()
        deadline = time.monotonic() + 60
        while not (folder / "sent").exists() and time.monotonic() < deadline:
            time.sleep(0.001)

    return hook


class _RaisesInDel:
    def __del__(self) -> None:
        raise ValueError("raised in __del__: Python hands it to sys.unraisablehook")


def signalled_in_unraisable_hook(rank: int, directory: str, own_hook: bool) -> None:
    """Rank whose SIGTERM lands in an unraisable hook; it must still end on that SIGTERM.

    With ``own_hook``, the rank installs the hook, in place of spawnkit's; otherwise it runs
    the one a fork inherited, which spawnkit's calls.
    """
    if own_hook:
        sys.unraisablehook = waiting_unraisable_hook(directory)
    _RaisesInDel()
    block_forever()


def attempt() -> int:
    """The attempt of the job this rank belongs to, as torchrun tells it (0 first)."""
    return int(os.environ["TORCHELASTIC_RESTART_COUNT"])


def fail_on_first_attempt(rank: int, bad_rank: int) -> int:
    """Rank ``bad_rank`` raises on attempt 0; every rank returns its attempt."""
    if rank == bad_rank and attempt() == 0:
        raise ValueError(f"rank {rank} failed on attempt 0")
    return attempt()


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended: no such process, or one that nobody reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except FileNotFoundError:  # reaped meanwhile
            return True
    else:
        return False  # elsewhere a zombie cannot be told from a running process


def grandchild_then_fail(rank: int, directory: str) -> bool:
    """Attempt 0 leaves a grandchild that ignores SIGTERM and fails; attempt 1 tells
    whether that grandchild was gone by the time it started."""
    marker = Path(directory) / f"{rank}.grandchild"
    if attempt() == 0:
        start_grandchild_and_then(rank, directory)
        raise ValueError("attempt 0 fails, its grandchild still running")
    return _gone(int(marker.read_text()))
