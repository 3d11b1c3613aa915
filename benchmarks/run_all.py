"""The benchmark set but launch + join in one run: spawnkit next to its competitors, one table each.

Run by hand (never by the tests), on a quiet machine; README.md here describes each benchmark
(``--only`` names, each a function ``bench_<name>(config)`` that runs alone) and the
environment. Ratios are ``spawnkit / the other``: below 1, spawnkit is faster. The competitors
of one row group run in turn, so that they see the same machine load. Every wait has a
timeout; every process a run starts is gone when it returns.

Imports stay inside functions: stdlib ``spawn`` workers re-import this script.
"""

from __future__ import annotations

import os
import sys
import time

# parent_death.py is a script in this folder: import them as modules, here and
# in workers that re-import this script (their sys.path is the parent's, folder included).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import socket
    from collections.abc import Callable
    from typing import Any

    Rows = list[dict[str, str]]

ALL_BENCHES = (
    "failure",
    "lingering-failure",
    "parent-death",
    "first-work",
    "memory",
    "heavy-main",
)
STDLIB_METHOD = {"fork": "fork", "forkserver": "forkserver", "spawn": "spawn"}
TORCH_METHODS = ("spawn", "fork", "forkserver")
JOB_TIMEOUT = 120.0  # seconds: the bound of every job and every wait below
PRELOAD_BACKEND = "forkserver"  # the backend whose option ``preload`` is
# lingering-failure: how long the raising rank's process lives on after its raise, in seconds,
# as a non-daemon thread or gloo's teardown at exit (1-5 s) keeps it.
LINGER = 3.0
# heavy-main: the variable naming the file where the script logs each run of its top level
HEAVY_MAIN_LOG = "RUN_ALL_MAIN_LOG"


# --- workers: module level, so that every backend can send them by name ------------------


def noop(rank: int) -> None:
    """Nothing at all: a launch's cost alone."""


def _check_in(address: str, fields: list[object], wait: bool = False) -> socket.socket:
    """Connect to the parent's rendezvous socket and send one line; wait for release if asked.

    The connection is the ready signal, its close by the parent the release: no sleeps.
    """
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(JOB_TIMEOUT)
    sock.connect(address)
    sock.sendall((" ".join(str(f) for f in fields) + "\n").encode())
    if wait:
        try:
            sock.recv(1)  # b"" once the parent closes: released
        except OSError:
            pass
    return sock


def fail_or_block(rank: int, address: str) -> None:
    """Rank 0 raises once the parent says go; the other ranks block until released."""
    if rank != 0:
        _check_in(address, ["block", rank, os.getpid()], wait=True).close()
        return
    sock = _check_in(address, ["fail", rank, os.getpid()])
    sock.recv(1)  # the go: every sibling is up and watched
    raised_at = time.monotonic()
    sock.sendall(f"{raised_at!r}\n".encode())
    sock.close()
    raise RuntimeError("rank 0 fails on purpose")


def fail_lingering_or_block(rank: int, address: str) -> None:
    """As :func:`fail_or_block`, but rank 0's process lives on for ``LINGER`` s after raising."""
    if rank == 0:
        import threading

        # Non-daemon: Python waits for it before the process may exit.
        threading.Thread(target=time.sleep, args=(LINGER,), daemon=False).start()
    fail_or_block(rank, address)


def import_and_report(rank: int, address: str, module: str) -> None:
    """Import ``module``, then report the monotonic time (system-wide on Linux)."""
    import importlib

    importlib.import_module(module)
    _check_in(address, [rank, os.getpid(), repr(time.monotonic())]).close()


def import_and_hold(rank: int, address: str, module: str) -> None:
    """Import ``module``, say ready with its peak RSS (kB), stay alive until measured."""
    import importlib
    import resource

    importlib.import_module(module)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    _check_in(address, [rank, os.getpid(), peak], wait=True).close()


# --- parent-side helpers ---------------------------------------------------------------------


class Rendezvous:
    """A Unix socket in a fresh folder: each worker connects and sends a line."""

    def __init__(self) -> None:
        import socket
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="spawnkit-bench-")
        self.address = os.path.join(self.folder, "rendezvous")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.address)
        self.server.listen(128)
        self.peers: list[tuple[socket.socket, list[str]]] = []

    def wait(self, count: int, timeout: float = JOB_TIMEOUT) -> list[list[str]]:
        """Accept until ``count`` workers checked in; their lines, split. TimeoutError after."""
        deadline = time.monotonic() + timeout
        while len(self.peers) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.peers)} of {count} workers checked in")
            self.server.settimeout(remaining)
            conn, _ = self.server.accept()
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            self.peers.append((conn, _read_line(conn).split()))
        return [fields for _, fields in self.peers]

    def release(self) -> None:
        for conn, _ in self.peers:
            conn.close()
        self.peers.clear()

    def close(self) -> None:
        import shutil

        self.release()
        self.server.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Rendezvous:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    ratio = ours / theirs
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"  # 0.0043, not 0.00


def _stdlib_processes(
    method: str, target: Callable[..., Any], args_of: Callable[[int], tuple[Any, ...]], n: int
) -> list[Any]:
    import multiprocessing

    context = multiprocessing.get_context(method)
    processes = [
        context.Process(target=target, args=args_of(rank))  # type: ignore[attr-defined]
        for rank in range(n)
    ]
    for process in processes:
        process.start()
    return processes


def _join_all(processes: list[Any], timeout: float = JOB_TIMEOUT) -> list[int | None]:
    """Join with a deadline; kill what is left after it. The exit codes."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0))
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.exitcode is None:
            process.kill()
            process.join(10)
    if any(code is None for code in codes):
        raise TimeoutError(f"workers still running after {timeout} s: exit codes {codes}")
    return codes


def _torch_job(target: Callable[..., Any], args: tuple[Any, ...], n: int, method: str) -> None:
    """torch.multiprocessing.start_processes, joined with a deadline."""
    import torch.multiprocessing as tmp

    ctx = tmp.start_processes(target, args=args, nprocs=n, join=False, start_method=method)
    deadline = time.monotonic() + JOB_TIMEOUT
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"torch {method} job still running after {JOB_TIMEOUT} s")
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()
                process.join(10)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "not installed"


def _isolated(function: str, **kwargs: Any) -> Any:
    """Run ``function(**kwargs)`` of this script in a fresh interpreter; its JSON result."""
    import json
    import subprocess

    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--isolated",
        function,
        json.dumps(kwargs),
    ]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=JOB_TIMEOUT + 60
    )
    if done.returncode:
        raise RuntimeError(f"{function}{kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- configuration ---------------------------------------------------------------------------


class Config:
    def __init__(
        self,
        repeat: int = 5,
        backends: tuple[str, ...] = (),
        torch: bool = True,
        loky: bool = True,
        small_n: int = 4,
    ) -> None:
        import spawnkit

        self.repeat = repeat
        self.backends = backends or tuple(
            b
            for b in spawnkit.available_backends()
            if b in ("spawn", "forkserver", "fork", "subprocess")
        )
        self.torch = torch and _have("torch")
        self.loky = loky and _have("loky")
        self.small_n = small_n  # N of the failure, first-work, memory and heavy-main jobs


class Section:
    def __init__(self, title: str, notes: list[str], rows: Rows) -> None:
        self.title, self.notes, self.rows = title, notes, rows


# --- 2. a rank raises --------------------------------------------------------------------------


def _failure_watch(rendezvous: Rendezvous, n: int, out: dict[str, Any]) -> None:
    """Thread: once all ranks checked in, watch the siblings' pidfds, then say go to rank 0."""
    import select

    try:
        lines = rendezvous.wait(n)
        pidfds = {}
        for fields in lines:
            if fields[0] == "block":
                try:
                    pidfds[os.pidfd_open(int(fields[2]))] = int(fields[2])
                except ProcessLookupError:
                    out.setdefault("exits", []).append(time.monotonic())
        out["sibling_pids"] = list(pidfds.values())
        failing = next(conn for conn, fields in rendezvous.peers if fields[0] == "fail")
        failing.sendall(b"g")
        out["raised_at"] = float(_read_line(failing))
        out["read"].set()
        poller = select.poll()
        for fd in pidfds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + JOB_TIMEOUT
        waiting = set(pidfds)
        while waiting and time.monotonic() < deadline:
            for fd, _ in poller.poll(1000):
                out.setdefault("exits", []).append(time.monotonic())
                poller.unregister(fd)
                waiting.discard(fd)
        for fd in pidfds:
            os.close(fd)
        out["stragglers"] = [pidfds[fd] for fd in waiting]
    except BaseException as exc:
        out["error"] = repr(exc)
    finally:
        out["read"].set()


class _QuietStderr:
    """Send this process's descriptor 2 (inherited by workers) to a file while a job runs.

    The failure jobs print the failing rank's traceback and the launchers' warnings; the
    tail is shown if the measurement fails.
    """

    def __enter__(self) -> _QuietStderr:
        import tempfile

        self.log = tempfile.TemporaryFile()
        sys.stderr.flush()
        self.saved = os.dup(2)
        os.dup2(self.log.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.log.seek(0)
        self.text = self.log.read().decode(errors="replace")
        self.log.close()


def _failure_once(name: str, n: int, run: Callable[[str], None]) -> dict[str, float | None]:
    import signal
    import threading

    with Rendezvous() as rendezvous:
        out: dict[str, Any] = {"read": threading.Event()}
        watcher = threading.Thread(target=_failure_watch, args=(rendezvous, n, out), daemon=True)
        watcher.start()
        quiet = _QuietStderr()
        try:
            with quiet:
                run(rendezvous.address)
        except Exception:
            noticed = time.monotonic()
        else:
            raise RuntimeError(f"{name}: the job did not fail:\n{quiet.text[-3000:]}")
        finally:
            out["read"].wait(JOB_TIMEOUT)  # rank 0's line is read before its socket closes
            rendezvous.release()  # siblings still blocked (stdlib) return now
        watcher.join(JOB_TIMEOUT)
        for pid in out.get("stragglers", []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if "error" in out or "raised_at" not in out:
        why = out.get("error", "rank 0 never raised")
        raise RuntimeError(f"{name}: {why}\n{quiet.text[-3000:]}")
    raised = out["raised_at"]
    exits = out.get("exits", [])
    gone = None if out.get("stragglers") else max(exits, default=raised) - raised
    return {"exception": noticed - raised, "siblings gone": gone}


def _failure_competitors(
    backend: str, config: Config, target: Callable[[int, str], None] = fail_or_block
) -> list[tuple[str, Callable[[str], None]]]:
    method = STDLIB_METHOD.get(backend, "spawn")
    n = config.small_n

    def ours(address: str) -> None:
        import spawnkit

        spawnkit.spawn(target, args=(address,), nprocs=n, backend=backend, timeout=JOB_TIMEOUT)

    def stdlib(address: str) -> None:
        from multiprocessing.connection import wait

        processes = _stdlib_processes(method, target, lambda r: (r, address), n)
        try:
            deadline = time.monotonic() + JOB_TIMEOUT
            while time.monotonic() < deadline:
                for sentinel in wait([p.sentinel for p in processes], timeout=1.0):
                    process = next(p for p in processes if p.sentinel == sentinel)
                    process.join()
                    if process.exitcode:
                        raise RuntimeError(f"a worker exited with {process.exitcode}")
            raise TimeoutError("no worker failed")
        finally:
            for process in processes:
                process.terminate()
            _join_all(processes)

    def torch_run(address: str) -> None:
        _torch_job(target, (address,), n, method)

    competitors = [(f"spawnkit {backend}", ours), (f"stdlib {method} + hand-written wait", stdlib)]
    if config.torch and backend in TORCH_METHODS:
        competitors.append((f"torch start_processes {method}", torch_run))
    return competitors


def _failure_rows(config: Config, target: Callable[[int, str], None]) -> Rows:
    rows: Rows = []
    for backend in config.backends:
        competitors = _failure_competitors(backend, config, target)
        samples: dict[str, list[dict[str, float | None]]] = {name: [] for name, _ in competitors}
        for _ in range(config.repeat):
            for name, run in competitors:
                samples[name].append(_failure_once(name, config.small_n, run))
        print(".", end="", file=sys.stderr, flush=True)
        for name, _ in competitors:
            row = {"backend": backend, "launcher": name}
            for key in ("exception", "siblings gone"):
                values = [s[key] for s in samples[name]]
                known = [v for v in values if v is not None]
                row[f"raise -> {key} ms"] = (
                    _ms(_median(known)) if len(known) == len(values) else "stragglers"
                )
            rows.append(row)
    print(file=sys.stderr)
    return rows


def bench_failure(config: Config) -> Section:
    rows = _failure_rows(config, fail_or_block)
    notes = [
        f"N={config.small_n}: rank 0 raises once its siblings are up and blocked; times from "
        "the worker's time.monotonic() just before raising",
        "exception: when spawn() (torch: join()) raised in the parent; siblings gone: exit of "
        "the last sibling, seen on pidfds the parent opened before the raise",
        "stdlib has no failure propagation: its row is the usual hand-written loop "
        "(connection.wait on the sentinels, terminate() the rest on a non-zero exit)",
        "spawnkit's spawn() raises after stopping the siblings (SIGTERM, then SIGKILL after "
        "the grace period), so its exception comes after they are gone",
    ]
    return Section("2. a rank raises: time to the parent's exception", notes, rows)


def bench_lingering_failure(config: Config) -> Section:
    rows = _failure_rows(config, fail_lingering_or_block)
    notes = [
        f"as section 2, but rank 0's process lives on for {LINGER:g} s after its raise (a "
        "non-daemon thread; gloo's teardown at exit takes 1-5 s), as a failing rank of a "
        "torch.distributed job does",
        "spawnkit acts on the rank's error report as it arrives (target: under 100 ms) and "
        "stops the failing rank with its siblings; torch and the stdlib loop wait for its "
        "exit",
    ]
    return Section("2b. a rank raises and its process lingers: time to the exception", notes, rows)


# --- 3. parent SIGKILL -----------------------------------------------------------------------


def bench_parent_death(config: Config) -> Section:
    import spawnkit

    import parent_death

    rows: Rows = []
    backends = [b for b in config.backends if b in ("spawn", "forkserver", "fork", "subprocess")]
    nprocs = min(config.small_n, 2)
    for backend in backends:
        for watch in spawnkit.available_watches():
            runs = [parent_death._measure(backend, watch, nprocs, 0) for _ in range(config.repeat)]
            numbers = [r for r in runs if isinstance(r, float)]
            row = {"backend": backend, "watch": watch}
            if numbers:
                row["median ms"] = _ms(_median(numbers))
                row["min ms"], row["max ms"] = _ms(min(numbers)), _ms(max(numbers))
            else:
                row["median ms"] = str(runs[0])
                row["min ms"] = row["max ms"] = "-"
            rows.append(row)
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    notes = [
        f"N={nprocs} blocked workers; parent SIGKILLed once every watch is armed; time to the "
        "exit of the last worker (parent_death.py's harness, no warm-up here)",
        "watch none = what stdlib multiprocessing does: its workers outlive the parent",
        "torch.multiprocessing is not measured here (the harness drives spawnkit jobs)",
    ]
    return Section("3. parent SIGKILL -> all workers gone", notes, rows)


# --- 4. time to first useful work ------------------------------------------------------------


def preload_probe(backend: str) -> str | None:
    """One rank on ``backend`` with ``preload=["json"]``: None if it ran, else why not."""
    import spawnkit

    try:
        spawnkit.spawn(noop, nprocs=1, backend=backend, preload=["json"], timeout=JOB_TIMEOUT)
    except spawnkit.UnknownOptionError:
        return "not available"
    except spawnkit.ConfigError as exc:
        return f"not available ({exc})"
    return None


_PRELOAD_SUPPORT: dict[str, str | None] = {}


def _preload_support(backend: str = PRELOAD_BACKEND) -> str | None:
    """None when spawnkit's ``backend`` takes ``preload``; else why not. Asked once per run.

    ``preload`` is a backend option (``spawn(..., backend="forkserver", preload=[...])``),
    unless a spawnkit takes it as a keyword of ``spawn()`` itself. The probe runs in a fresh
    interpreter, so that the fork server it starts ends with it, not with this run.
    """
    import inspect

    import spawnkit

    if backend not in _PRELOAD_SUPPORT:
        if "preload" in inspect.signature(spawnkit.spawn).parameters:
            _PRELOAD_SUPPORT[backend] = None
        else:
            _PRELOAD_SUPPORT[backend] = _isolated("preload_probe", backend=backend)
    return _PRELOAD_SUPPORT[backend]


def first_work_job(launcher: str, module: str, n: int, preload: bool) -> dict[str, list[float]]:
    """In a fresh parent: two jobs in a row; per rank, spawn() call -> module imported (s)."""
    import multiprocessing

    kind, method = launcher.split(":")
    if kind == "stdlib" and method == "forkserver" and preload:
        multiprocessing.set_forkserver_preload(["__main__", module])
    result = {}
    for job in ("cold", "warm"):
        with Rendezvous() as rendezvous:
            start = time.monotonic()
            if kind == "spawnkit":
                import spawnkit

                options: dict[str, Any] = {"preload": [module]} if preload else {}
                spawnkit.spawn(
                    import_and_report,
                    args=(rendezvous.address, module),
                    nprocs=n,
                    backend=method,
                    timeout=JOB_TIMEOUT,
                    **options,
                )
            else:
                processes = _stdlib_processes(
                    method, import_and_report, lambda r: (r, rendezvous.address, module), n
                )
                if any(_join_all(processes)):
                    raise RuntimeError(f"{launcher} workers failed")
            lines = rendezvous.wait(n)
            result[job] = sorted(float(fields[2]) - start for fields in lines)
    return result


def bench_first_work(config: Config) -> Section:
    modules = ["numpy"] if _have("numpy") else []
    if config.torch:
        modules.append("torch")
    preload = _preload_support() if PRELOAD_BACKEND in config.backends else None
    launchers = []
    for backend in config.backends:
        launchers.append((f"spawnkit:{backend}", False))
        if backend == PRELOAD_BACKEND:
            launchers.append((f"spawnkit:{backend}", True))
    launchers += [
        ("stdlib:forkserver", False),
        ("stdlib:forkserver", True),
        ("stdlib:spawn", False),
    ]
    rows: Rows = []
    for module in modules:
        for launcher, with_preload in launchers:
            row = {"module": module, "launcher": launcher.replace(":", " ")}
            row["preload"] = "yes" if with_preload else "no"
            if with_preload and launcher.startswith("spawnkit") and preload is not None:
                row["preload"] = f"preload: {preload}"
                rows.append(row)
                continue
            runs = [
                _isolated(
                    "first_work_job",
                    launcher=launcher,
                    module=module,
                    n=config.small_n,
                    preload=with_preload,
                )
                for _ in range(config.repeat)
            ]
            for job in ("cold", "warm"):
                row[f"{job}: median rank ms"] = _ms(_median([_median(r[job]) for r in runs]))
                row[f"{job}: last rank ms"] = _ms(_median([max(r[job]) for r in runs]))
            rows.append(row)
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    notes = [
        f"N={config.small_n}; from the parent's spawn() (stdlib: first Process.start()) to the "
        "rank's time.monotonic() right after importing the module; medians over runs",
        "each run is a fresh parent process that has not imported the module: cold = its "
        "first job (a fork server starts then, preload included), warm = its second job",
        "stdlib forkserver preload = multiprocessing.set_forkserver_preload(['__main__', module])",
        f"spawnkit preload = spawn(..., preload=[module]), an option of the {PRELOAD_BACKEND} "
        "backend alone: the other backends have no preload row",
    ]
    if not modules:
        notes.append("numpy is not installed: nothing measured")
    return Section("4. time to first useful work (heavy import in each rank)", notes, rows)


# --- 6. memory per worker --------------------------------------------------------------------


def _memory(pid: int, peak_kb: str) -> dict[str, float]:
    """MB: RSS, the peak RSS the worker reported, PSS and USS."""
    import psutil

    found = psutil.Process(pid).memory_full_info()
    mb = 1024 * 1024
    return {
        "rss": found.rss / mb,
        "peak": int(peak_kb) / 1024,
        "pss": found.pss / mb,
        "uss": found.uss / mb,
    }


def memory_job(launcher: str, module: str, n: int, preload: bool = False) -> list[dict[str, float]]:
    """In a fresh parent: N workers import ``module`` and hold; /proc read per worker.

    With ``preload``, a fork server imports ``module`` first (spawnkit: ``preload=[module]``,
    stdlib: ``set_forkserver_preload``), so its workers share those pages.
    """
    import multiprocessing

    kind, method = launcher.split(":")
    if kind == "stdlib" and method == "forkserver" and preload:
        multiprocessing.set_forkserver_preload(["__main__", module])
    with Rendezvous() as rendezvous:
        args = (rendezvous.address, module)
        if kind == "spawnkit":
            import spawnkit

            options: dict[str, Any] = {"preload": [module]} if preload else {}
            ctx = spawnkit.spawn(
                import_and_hold, args=args, nprocs=n, join=False, backend=method,
                timeout=JOB_TIMEOUT, **options,
            )  # fmt: skip
        elif kind == "torch":
            import torch.multiprocessing as tmp

            ctx = tmp.start_processes(
                import_and_hold, args=args, nprocs=n, join=False, start_method=method
            )
        else:
            processes = _stdlib_processes(method, import_and_hold, lambda r: (r, *args), n)
        try:
            lines = rendezvous.wait(n)
            measured = [_memory(int(fields[1]), fields[2]) for fields in lines]
        finally:
            rendezvous.release()
            if kind == "stdlib":
                _join_all(processes)
            else:
                deadline = time.monotonic() + JOB_TIMEOUT
                while not ctx.join(timeout=1.0):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{launcher}: workers still running")
    return measured


def bench_memory(config: Config) -> Section:
    rows: Rows = []
    if not _have("numpy"):
        return Section("6. memory per worker", ["numpy is not installed: nothing measured"], [])
    preload = _preload_support() if PRELOAD_BACKEND in config.backends else None
    launchers: list[tuple[str, bool]] = []
    for backend in config.backends:
        method = STDLIB_METHOD.get(backend, "spawn")
        launchers.append((f"spawnkit:{backend}", False))
        if backend == PRELOAD_BACKEND:
            launchers.append((f"spawnkit:{backend}", True))
        if backend in STDLIB_METHOD:
            launchers.append((f"stdlib:{method}", False))
            if method == "forkserver":
                launchers.append((f"stdlib:{method}", True))
            if config.torch:
                launchers.append((f"torch:{method}", False))
    for launcher, with_preload in launchers:
        row = {"launcher": launcher.replace(":", " "), "preload": "no"}
        if with_preload:
            row["preload"] = "numpy"
            if launcher.startswith("spawnkit") and preload is not None:
                row["preload"] = f"preload: {preload}"
                rows.append(row)
                continue
        runs = [
            _isolated(
                "memory_job",
                launcher=launcher,
                module="numpy",
                n=config.small_n,
                preload=with_preload,
            )
            for _ in range(config.repeat)
        ]
        for key, label in (("rss", "RSS"), ("peak", "peak RSS"), ("pss", "PSS"), ("uss", "USS")):
            row[f"{label} MB"] = f"{_median([w[key] for run in runs for w in run]):.1f}"
        rows.append(row)
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    notes = [
        f"N={config.small_n} workers that imported numpy and wait (ready and release over a "
        "Unix socket, no sleeps); medians over workers and runs, each run a fresh parent",
        "RSS, PSS and USS: psutil's memory_full_info(); peak RSS: the worker's own "
        "getrusage() ru_maxrss",
        "torch rows: the parent imports torch (torch.multiprocessing needs it), so their fork "
        "workers share torch's pages",
        f"preload numpy: spawnkit {PRELOAD_BACKEND} with spawn(..., preload=['numpy']), stdlib "
        "forkserver with set_forkserver_preload(['__main__', 'numpy']): the server imports "
        "numpy once, its workers are forks of it and share those pages until written",
    ]
    return Section("6. memory per worker (numpy imported)", notes, rows)


# --- 7. a program whose __main__ imports a heavy module --------------------------------------

# The program of heavy-main, written to a fresh folder per module: what a torch user's
# training script looks like to a launcher. Its main block imports this file (by path) for
# the timing loop; a worker that re-imports the script runs only the part above the guard.
HEAVY_MAIN_SCRIPT = """\
import os

import {module}

if os.environ.get({log_env!r}):  # one line per run of this top level: who imported {module}
    with open(os.environ[{log_env!r}], "a") as log:
        log.write(f"{{os.getpid()}} {{__name__}}\\n")


def noop(rank):
    pass


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, {here!r})
    import run_all

    print(json.dumps(run_all.heavy_main_job(noop, *sys.argv[1:])))
"""


def _count_lines(path: str | None) -> int:
    try:
        with open(path or "") as lines:
            return sum(1 for _ in lines)
    except FileNotFoundError:
        return 0


def heavy_main_job(
    fn: Callable[[int], None], launcher: str, n: str, repeat: str, preload: str = ""
) -> dict[str, list[float]]:
    """In the heavy script's main block: a warm-up launch + join, then ``repeat`` timed ones.

    ``fn`` is the script's own ``noop``, so every launcher's workers need its ``__main__``.
    Per launch: wall time (s) and how often the script's top level ran meanwhile.
    """
    kind, method = launcher.split(":")
    nprocs = int(n)
    log = os.environ.get(HEAVY_MAIN_LOG)

    def launch_once() -> None:
        if kind == "spawnkit":
            import spawnkit

            options: dict[str, Any] = {"preload": [preload]} if preload else {}
            spawnkit.spawn(fn, nprocs=nprocs, backend=method, timeout=JOB_TIMEOUT, **options)
        elif kind == "stdlib":
            codes = _join_all(_stdlib_processes(method, fn, lambda r: (r,), nprocs))
            if any(codes):
                raise RuntimeError(f"stdlib {method} workers failed: {codes}")
        else:
            _torch_job(fn, (), nprocs, method)

    result: dict[str, list[float]] = {"seconds": [], "main runs": []}
    for _ in range(1 + int(repeat)):
        before = _count_lines(log)
        start = time.perf_counter()
        launch_once()
        result["seconds"].append(time.perf_counter() - start)
        result["main runs"].append(_count_lines(log) - before)
    return result


def _session_members(session: int) -> list[int]:
    """Live processes (zombies left out) of a session."""
    import psutil

    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != "zombie":
                members.append(process.pid)
        except OSError:  # gone meanwhile
            pass
    return members


def _end_session(session: int, grace: float = 10.0) -> list[int]:
    """Give what is left of a session ``grace`` seconds to exit; SIGKILL the rest, named."""
    import signal

    deadline = time.monotonic() + grace
    left = _session_members(session)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _session_members(session)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _heavy_main_run(
    script: str, launcher: str, n: int, repeat: int, preload: str
) -> tuple[dict[str, list[float]], list[int]]:
    """``python script.py LAUNCHER N REPEAT PRELOAD`` in a session of its own.

    Its result, and the processes of that session still running once the script had exited
    (given 10 s to go, then killed).
    """
    import json
    import subprocess
    import tempfile

    folder = os.path.dirname(script)
    log = os.path.join(folder, "main-runs.log")
    if os.path.exists(log):
        os.remove(log)
    command = [sys.executable, script, launcher, str(n), str(repeat), preload]
    # Files, not pipes: a process that outlives the script must not hold up the wait.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            cwd=folder,
            env={**os.environ, HEAVY_MAIN_LOG: log},
            start_new_session=True,
        )
        try:
            code = process.wait((1 + repeat) * JOB_TIMEOUT + 60)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            left = _end_session(process.pid)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if code is None:
        raise TimeoutError(f"heavy-main {launcher}: still running, killed:\n{stderr[-3000:]}")
    if code:
        raise RuntimeError(f"heavy-main {launcher} exited with {code}:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), left


def _heavy_main_label(launcher: str, preload: str) -> str:
    kind, method = launcher.split(":")
    name = {"torch": "torch start_processes"}.get(kind, kind)
    return f"{name} {method}" + (f" preload=[{preload}]" if preload else "")


def _heavy_main_launchers(module: str, ours: list[str], config: Config) -> list[tuple[str, str]]:
    """(launcher, module to preload or "") of one row group, in the order of its rows."""
    launchers = []
    for backend in ours:
        launchers.append((f"spawnkit:{backend}", ""))
        if backend == PRELOAD_BACKEND:
            launchers.append((f"spawnkit:{backend}", module))
    launchers += [("stdlib:forkserver", ""), ("stdlib:spawn", "")]
    if config.torch:
        launchers += [("torch:spawn", ""), ("torch:forkserver", "")]
    return launchers


def _heavy_main_group(
    module: str, launchers: list[tuple[str, str]], config: Config, left_behind: list[str]
) -> tuple[Rows, dict[tuple[str, str], float]]:
    """One module's rows, and the median seconds per measured launcher."""
    import shutil
    import subprocess
    import tempfile

    preload = _preload_support() if any(p for _, p in launchers) else None
    folder = tempfile.mkdtemp(prefix="spawnkit-bench-heavy-main-")
    medians: dict[tuple[str, str], float] = {}
    group: Rows = []
    # The module's files into the page cache first: the group's first launcher must not pay
    # for reading them from disk and the others not.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=JOB_TIMEOUT)
    try:
        script = os.path.join(folder, f"heavy_{module}.py")
        with open(script, "w") as file:
            file.write(HEAVY_MAIN_SCRIPT.format(module=module, log_env=HEAVY_MAIN_LOG, here=_HERE))
        for launcher, with_preload in launchers:
            row = {"module": module, "launcher": _heavy_main_label(launcher, with_preload)}
            group.append(row)
            if with_preload and preload is not None:
                row["1st call ms"] = f"preload: {preload}"
                continue
            result, left = _heavy_main_run(
                script, launcher, config.small_n, config.repeat, with_preload
            )
            if left:
                left_behind.append(f"{row['launcher']} ({module}): pids {left}")
            medians[(launcher, with_preload)] = _median(result["seconds"][1:])
            runs = result["main runs"]
            row["1st call ms"] = _ms(result["seconds"][0])
            row["median ms"] = _ms(medians[(launcher, with_preload)])
            row["top-level runs"] = f"{runs[0]:.0f} / {_median(runs[1:]):.0f}"
            print(".", end="", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    fast = medians.get((f"spawnkit:{PRELOAD_BACKEND}", ""))
    for row, (launcher, with_preload) in zip(group, launchers, strict=True):
        mine = medians.get((launcher, with_preload))
        kind, method = launcher.split(":")
        same = medians.get((f"spawnkit:{method}", "")) if kind != "spawnkit" else None
        row["spawnkit / this"] = _ratio(same, mine)
        if (launcher, with_preload) != (f"spawnkit:{PRELOAD_BACKEND}", ""):
            row[f"spawnkit {PRELOAD_BACKEND} / this"] = _ratio(fast, mine)
    return group, medians


def bench_heavy_main(config: Config) -> Section:
    modules = ["numpy"] if _have("numpy") else []
    if config.torch:
        modules.append("torch")
    ours = [b for b in ("forkserver", "spawn", "subprocess") if b in config.backends]
    notes = [
        f"N={config.small_n} no-op workers (the script's own noop) launched + joined from a "
        "program whose __main__ script imports the module at its top level; each launcher in "
        "a fresh `python script.py LAUNCHER ...` process: one 1st call, then the median of "
        f"{config.repeat} timed calls",
        "1st call: includes what a launcher starts once (spawnkit's and stdlib's fork "
        "servers, torch.multiprocessing's import in the parent); for spawnkit forkserver, "
        "the cold server. Later calls of spawnkit forkserver reuse the warm server",
        "top-level runs: how often the script's top level (the heavy import) ran during the "
        "1st call / during each later call (median), counted in a log file it appends to",
        "spawnkit / this: the spawnkit backend of the same start method (stdlib and torch "
        "spawn vs spawnkit spawn, forkserver vs forkserver, later calls); below 1, spawnkit "
        "is faster",
        "preload=[module]: the module the script imports anyway, so the server has it either "
        "way; the row shows what passing it costs or saves",
        "torch rows: torch.multiprocessing wraps the target in a function of its own, so each "
        "of its workers imports torch too, whatever the script imports",
    ]
    rows: Rows = []
    left_behind: list[str] = []
    for module in modules:
        launchers = _heavy_main_launchers(module, ours, config)
        group, medians = _heavy_main_group(module, launchers, config, left_behind)
        rows += group
        notes += _heavy_main_targets(module, medians)
    print(file=sys.stderr)
    if not modules:
        notes.append("numpy is not installed: nothing measured")
    if left_behind:
        notes.append(
            "still running 10 s after their script exited, then killed: " + "; ".join(left_behind)
        )
    else:
        notes.append("no process of any launcher outlived its script by 10 s")
    return Section("7. a program whose __main__ imports a heavy module", notes, rows)


def _heavy_main_targets(module: str, medians: dict[tuple[str, str], float]) -> list[str]:
    """The goals of spawnkit forkserver: half stdlib forkserver's time, 20x torch spawn's."""
    lines = []
    for preload in ("", module):
        ours = medians.get((f"spawnkit:{PRELOAD_BACKEND}", preload))
        if not ours:
            continue
        name = _heavy_main_label(f"spawnkit:{PRELOAD_BACKEND}", preload)
        stdlib = medians.get(("stdlib:forkserver", ""))
        if stdlib:
            verdict = "met" if ours / stdlib <= 0.5 else "NOT met"
            lines.append(
                f"{module}: {name} / stdlib forkserver = {ours / stdlib:.2f} "
                f"(target <= 0.5: {verdict})"
            )
        torch_spawn = medians.get(("torch:spawn", ""))
        if torch_spawn:
            verdict = "met" if torch_spawn / ours >= 20 else "NOT met"
            lines.append(
                f"{module}: {name} is {torch_spawn / ours:.1f}x as fast as torch "
                f"start_processes spawn (target >= 20x: {verdict})"
            )
    return lines


# --- the report ------------------------------------------------------------------------------


BENCHES: dict[str, Callable[[Config], Section]] = {
    "failure": bench_failure,
    "lingering-failure": bench_lingering_failure,
    "parent-death": bench_parent_death,
    "first-work": bench_first_work,
    "memory": bench_memory,
    "heavy-main": bench_heavy_main,
}


def machine_lines(config: Config) -> list[str]:
    import platform

    import spawnkit

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"CPUs: {os.cpu_count()} (usable: {affinity}); load average at start: {load}",
        f"kernel: {platform.system()} {platform.release()} ({platform.machine()})",
        f"Python: {platform.python_version()} ({sys.executable})",
        f"spawnkit: {spawnkit.__version__} ({os.path.dirname(spawnkit.__file__)})",
        f"torch: {_version('torch')}{'' if config.torch else ' (not compared)'}; "
        f"loky: {_version('loky')}{'' if config.loky else ' (not compared)'}; "
        f"numpy: {_version('numpy')}",
        f"repeat: {config.repeat}; N: {config.small_n} (failure, first-work, memory, heavy-main); "
        f"backends: {', '.join(config.backends)}",
    ]


def render(section: Section, markdown: bool) -> str:
    columns: list[str] = []
    for row in section.rows:
        columns += [c for c in row if c not in columns]
    rows = [{c: row.get(c, "-") for c in columns} for row in section.rows]
    if markdown:
        lines = [f"### {section.title}", ""]
        lines += [f"- {note}" for note in section.notes]
        if rows:
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
        return "\n".join(lines)
    lines = [section.title, *(f"  {note}" for note in section.notes)]
    if rows:
        widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
        for row in [dict(zip(columns, columns, strict=True)), *rows]:
            lines.append("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell (median)")
    parser.add_argument(
        "--small-n", type=int, default=4, help="N of failure/first-work/memory/heavy-main"
    )
    parser.add_argument("--only", default=",".join(ALL_BENCHES), help="benchmarks to run")
    parser.add_argument("--backends", default="", help="default: every built-in available one")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out")
    parser.add_argument("--no-loky", action="store_true", help="leave loky out")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ns = parser.parse_args(argv)
    ns.benches = [b.strip() for b in ns.only.split(",") if b.strip()]
    unknown = sorted(set(ns.benches) - set(ALL_BENCHES))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(ALL_BENCHES)}")
    if ns.repeat < 1 or ns.small_n < 2:
        parser.error("--repeat must be >= 1 and --small-n >= 2")
    return ns


def main(argv: list[str] | None = None) -> int:
    import shlex

    import spawnkit

    ns = _parse(argv)
    backends = tuple(b.strip() for b in ns.backends.split(",") if b.strip())
    unknown = sorted(set(backends) - set(spawnkit.available_backends()))
    if unknown:
        print(f"not available here: {', '.join(unknown)}")
        return 2
    config = Config(ns.repeat, backends, not ns.no_torch, not ns.no_loky, ns.small_n)
    if config.torch and {"failure", "lingering-failure"} & set(ns.benches):
        import torch  # noqa: F401  every row of these sees the same parent: torch loaded

    command = shlex.join(
        [
            "python",
            os.path.relpath(os.path.abspath(__file__), os.path.dirname(_HERE)),
            *sys.argv[1:],
        ]
    )
    header = [f"command: {command}", *machine_lines(config)]
    if ns.markdown:
        print("\n".join(["```text", *header, "```"]))
    else:
        print("\n".join(header))
    for name in ns.benches:
        started = time.monotonic()
        section = BENCHES[name](config)
        section.notes.append(f"this benchmark took {time.monotonic() - started:.0f} s")
        print()
        print(render(section, ns.markdown), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--isolated"]:
        import json

        print(json.dumps(globals()[sys.argv[2]](**json.loads(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
