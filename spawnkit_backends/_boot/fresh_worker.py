"""The first code of a ``subprocess`` worker: read the job from a pipe, then run the rank.

Run by path, ``python [options] fresh_worker.py RANK SPEC_FD RESULT_FD STARTED_FD``, before
spawnkit can be imported: until it is, only modules every worker needs anyway are used, and a
failure is sent to the parent by hand in the framing of ``spawnkit/_wire.py``. It must still
parse on an interpreter too old for spawnkit, so that the parent hears why, not an exit code.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from spawnkit.plugin import WorkerSpec

MIN_PYTHON = (3, 10)


def _interpreter() -> str:
    return f"{sys.executable or sys.argv[0]} (Python {sys.version.split()[0]})"


def _read_exact(fd: int, size: int) -> bytearray:
    import io

    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    with io.FileIO(fd, "rb", closefd=False) as pipe:
        while got < size:
            n = pipe.readinto(view[got:])
            if not n:
                raise EOFError(
                    f"the parent closed the pipe after {got} of {size} bytes: it has exited"
                )
            got += n
    return buf


def _read_frame(fd: int) -> bytearray:
    return _read_exact(fd, int.from_bytes(_read_exact(fd, 8), "big"))


def _drop_script_dir() -> None:
    # Python put this file's directory first; its modules are not top-level modules.
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and sys.path[0] and os.path.realpath(sys.path[0]) == here:
        del sys.path[0]


def _import_spawnkit(where: list[str]) -> None:
    # Only for the import: the directory may be another interpreter's site-packages, whose
    # other packages must not shadow this interpreter's own. Submodules come from the
    # packages' __path__ afterwards.
    sys.path[:0] = where
    try:
        import spawnkit.plugin

        # Load what the spec's pickle names while that directory is still on the path.
        assert spawnkit.plugin.WorkerSpec is not None
    finally:
        del sys.path[: len(where)]


def _set_path(entries: list[str | None]) -> None:
    # The parent's sys.path with its interpreter's own directories (None marks where they
    # were) replaced by this interpreter's, so that its flags (-I, -S), version and virtual
    # environment take effect while the job's own entries keep their places.
    own = list(sys.path)
    if None not in entries:
        entries = [*entries, None]
    path: list[str] = []
    for entry in entries:
        for item in own if entry is None else [entry]:
            if item not in path:
                path.append(item)
    sys.path[:] = path


def _from_handle(handle: int, flags: int) -> int:
    if sys.platform == "win32":
        import msvcrt  # Windows passes handles, which the C runtime wraps in descriptors

        return msvcrt.open_osfhandle(handle, flags)
    else:
        raise OSError(f"handles are passed only on Windows, not on {sys.platform}")


def _prepare(rank: int, spec_fd: int) -> WorkerSpec:
    if sys.version_info < MIN_PYTHON:
        raise RuntimeError(
            f"the worker's interpreter {_interpreter()} is too old: spawnkit needs Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; pass executable= a newer interpreter"
        )
    import pickle

    try:
        header = pickle.loads(_read_frame(spec_fd))
    except EOFError as exc:
        raise RuntimeError(f"the worker for rank {rank} got no job: {exc}") from exc
    try:
        _import_spawnkit(header["spawnkit_path"])
    except Exception as exc:
        raise RuntimeError(
            f"the worker's interpreter {_interpreter()} cannot import spawnkit from "
            f"{header['spawnkit_path']!r}: {exc!r}; install spawnkit for that interpreter or "
            f"choose one that can import it"
        ) from exc
    _set_path(header["path"])
    sys.argv[:] = header["argv"]
    from spawnkit import plugin

    plugin.load_main(header["main"])
    try:
        spec: WorkerSpec = pickle.loads(_read_frame(spec_fd))
    except Exception as exc:
        raise RuntimeError(
            f"the worker's interpreter {_interpreter()} cannot read the job that the parent "
            f"(Python {header['python']}) sent: {exc!r}"
        ) from exc
    os.close(spec_fd)
    if sys.platform == "win32":
        flags = [os.O_WRONLY] + [0] * (len(spec.fds) - 1)  # the result channel, the watch's
        spec = spec.with_fds([_from_handle(h, f) for h, f in zip(spec.fds, flags, strict=True)])
    for fd in spec.fds:
        try:
            os.fstat(fd)
        except OSError:
            raise RuntimeError(
                f"descriptor {fd} of rank {rank} did not reach the worker; the backend must "
                "pass every descriptor in spec.fds"
            ) from None
    # Inherited on purpose to get here; a process the worker starts must not hold them.
    assert spec.result_fd is not None  # a local worker's spec
    os.set_inheritable(spec.result_fd, False)
    return spec


def send_error(fd: int, exc: BaseException, text: str) -> None:
    """Send ``exc`` as the rank's error, framed as ``spawnkit/_wire.py`` frames a message.

    Protocol 2 throughout: the sender may be an interpreter too old for spawnkit.
    """
    import pickle

    try:
        exc_bytes: bytes | None = pickle.dumps(exc, 2)
    except Exception:  # noqa: BLE001 - not picklable: the text alone tells
        exc_bytes = None
    body = pickle.dumps((exc_bytes, text), 2)
    view = memoryview(b"E" + len(body).to_bytes(8, "big") + body)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:  # the parent is gone: nobody is left to tell
        pass


def _descriptor(arg: str, flags: int = 0) -> int:
    return _from_handle(int(arg), flags) if sys.platform == "win32" else int(arg)


def main(argv: list[str]) -> int:
    """Entry point: ``argv`` is ``[script, rank, spec fd, result fd, started fd]``.

    On Windows the three numbers are handles.
    """
    _drop_script_dir()  # before any import: nothing may resolve against that directory
    # Tells the parent that this script runs: an `executable` that is no Python at all
    # could otherwise exit 0 without a word, and pass for a rank that returned None.
    started = _descriptor(argv[4], os.O_WRONLY)
    try:
        os.write(started, b"\x01")
    except OSError:  # the parent is gone; reading the spec fails next, and says so
        pass
    os.close(started)
    rank = int(argv[1])
    try:
        spec = _prepare(rank, _descriptor(argv[2], os.O_RDONLY))
    except BaseException as exc:  # noqa: BLE001 - every failure before the rank runs is reported
        import traceback

        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        send_error(_descriptor(argv[3], os.O_WRONLY), exc, text)
        return 1
    from spawnkit.plugin import run_worker

    return run_worker(spec)


if __name__ == "__main__":
    _BOOT_MODULE = sys.modules["__main__"]  # kept alive after __main__ is replaced
    sys.exit(main(sys.argv))
