"""``slurm``: each rank a task of one Slurm job step (``srun``).

Design. The first rank's start runs one ``srun --ntasks=N`` (in the allocation the program runs
in, where ``SLURM_JOB_ID`` is set; else asking Slurm for a new job with the user's options) of
``python -m spawnkit_backends._slurm_task``, and waits until every task connected back or
Slurm refused. How ``fn`` and its arguments travel: the job listens on a TCP port and writes
its address, the port and a fresh 32-byte secret to srun's stdin, which Slurm forwards to
every task (``--input=all``) over its own authenticated I/O channel: no command line,
environment or file holds either. The job listens on one address only: its own on the route
to slurmctld (``scontrol show config``'s SlurmctldHost, a datagram socket's ``connect`` to
pick the route), which is what Slurm gives the tasks as ``SLURM_SRUN_COMM_HOST`` and the
nodes reach already; loopback on a one-machine cluster. Both sides prove they hold the secret
(``multiprocessing.connection``'s HMAC challenge) before anything else is sent. Each task then
gets its rank's spec, forks the rank's worker, and sends back its exit status and report.

Nothing is left behind: the job's stops reach the worker through its task (SIGTERM, then
SIGKILL of its process group); a task whose job connection ends kills its worker; srun runs
under a keeper (``_slurm_reaper``) in a session of its own (a Ctrl-C in the terminal reaches
the job, which stops the ranks, not srun's own interactive handling). The keeper is srun's
parent and a child subreaper, so srun's helper that outlives it is reaped there, not left a
zombie of the job's process; it cancels the step with ``scancel`` when the job's pipe to it
ends while srun runs: the job closes it when the step did not end in time, and the kernel
closes it when the job's process dies, SIGKILL included. Slurm's client tools must be on
PATH; the job's interpreter path must exist on the nodes (a shared filesystem, as Slurm
clusters have).
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, final

import spawnkit
from spawnkit import plugin

from . import _slurm_reaper

NAME = "slurm"
OPTIONS = (
    "partition",
    "nodes",
    "ntasks_per_node",
    "cpus_per_task",
    "gpus_per_task",
    "mem",
    "time",
    "account",
    "qos",
    "constraint",
    "srun_args",
    "queue_timeout",
)
# srun options the backend sets itself: the step's shape and its stdin are the design.
OWN_SRUN_OPTIONS = ("-n", "--ntasks", "-i", "--input", "-J", "--job-name", "--immediate", "-I")

# Time for srun to answer past its --immediate and for the tasks' interpreters to start
# and connect back, on a loaded node.
TASK_START_WAIT = 30.0
# How long srun may take to end once every task ended, before the step is cancelled.
STEP_END_WAIT = 10.0
# How long srun's keeper may take to end the step once told to: its two scancels, srun's
# exit, what srun left, and a margin for a loaded machine.
CANCEL_WAIT = (
    2 * _slurm_reaper.SCANCEL_WAIT + _slurm_reaper.SRUN_EXIT_WAIT + _slurm_reaper.LEFTOVER_WAIT + 10
)
# srun's stderr ends with its keeper, which has been waited for: a bound all the same.
RELAY_END_WAIT = 10.0
# How long a keeper killed past CANCEL_WAIT may take to be reaped (SIGKILL: at once).
KILLED_EXIT_WAIT = 10.0
# scontrol asks slurmctld for the controller's address; not waited for past this.
SCONTROL_WAIT = 30.0
# A rank's thread ends at once when its connection is shut down; bounded all the same.
HANDLE_THREAD_WAIT = 10.0
# srun's last lines kept for an error message.
STDERR_TAIL = 4096


def _unavailable() -> str | None:
    if sys.platform != "linux":  # an if/else, so that a check for another platform reads it
        return "the slurm backend runs on Linux"
    else:
        missing = [tool for tool in ("srun", "scancel") if shutil.which(tool) is None]
        if not missing:
            return None
        return (
            f"Slurm's client tools are not on PATH ({', '.join(missing)} missing): install "
            "Slurm's client (Debian: apt-get install slurm-client) or load its module"
        )


def _factory(nprocs: int, **options: Any) -> SlurmBackend:
    return SlurmBackend(nprocs, **options)


@plugin.hookimpl
def spawnkit_register_backends(registry: plugin.BackendRegistry) -> None:
    registry.add(
        NAME,
        _factory,
        options=OPTIONS,
        remote=True,
        watches="own",  # its tasks end with the job's connection; its keeper scancels
        pass_nprocs=True,
        unavailable=_unavailable(),
        description="each rank a task of one Slurm job step (srun)",
    )


# -- options ------------------------------------------------------------------------------


def _fail(message: str, error: type[spawnkit.ConfigError] = spawnkit.ConfigError) -> NoReturn:
    raise error(f"backend {NAME!r}: {message}")


def _count(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{name} must be an int, not {value!r}", spawnkit.InvalidArgumentError)
    if value < low:
        _fail(f"{name} must be >= {low}, not {value!r}")
    return value


def _word(name: str, value: object, pattern: str, example: str) -> str:
    if not isinstance(value, str):
        _fail(
            f"{name} must be a str such as {example!r}, not {value!r}",
            spawnkit.InvalidArgumentError,
        )
    if not re.fullmatch(pattern, value):
        _fail(f"{name}={value!r} is not a Slurm {name}; pass one such as {example!r}")
    return value


_NAME_RE = r"[A-Za-z0-9_.\-]+"
_MEM_RE = r"[0-9]+[KMGT]?"
# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME_RE = r"[0-9]+(:[0-9]{1,2}){0,2}|[0-9]+-[0-9]{1,2}(:[0-9]{1,2}){0,2}"


def _srun_options(nprocs: int, options: dict[str, Any]) -> list[str]:
    """srun's options for what the user asked of Slurm, each checked before anything runs."""
    args = []
    for name in ("partition", "account", "qos"):
        if options[name] is not None:
            args.append(f"--{name}={_word(name, options[name], _NAME_RE, 'debug')}")
    if options["constraint"] is not None:
        value = _word("constraint", options["constraint"], r"[A-Za-z0-9_.\-&|\[\]*:()!]+", "a100")
        args.append(f"--constraint={value}")
    nodes = ntasks_per_node = None
    if options["nodes"] is not None:
        nodes = _count("nodes", options["nodes"])
        if nodes > nprocs:
            _fail(f"nodes={nodes} is more than the job's {nprocs} rank(s); pass nodes<={nprocs}")
        args.append(f"--nodes={nodes}")
    if options["ntasks_per_node"] is not None:
        ntasks_per_node = _count("ntasks_per_node", options["ntasks_per_node"])
        if nodes is not None and nodes * ntasks_per_node < nprocs:
            _fail(
                f"nodes={nodes} with ntasks_per_node={ntasks_per_node} hold "
                f"{nodes * ntasks_per_node} rank(s), fewer than the job's {nprocs}; "
                "ask for more nodes or tasks per node"
            )
        args.append(f"--ntasks-per-node={ntasks_per_node}")
    if options["cpus_per_task"] is not None:
        args.append(f"--cpus-per-task={_count('cpus_per_task', options['cpus_per_task'])}")
    if options["gpus_per_task"] is not None:
        args.append(f"--gpus-per-task={_count('gpus_per_task', options['gpus_per_task'])}")
    if options["mem"] is not None:
        mem = options["mem"]
        if isinstance(mem, int) and not isinstance(mem, bool):
            mem = f"{_count('mem', mem)}M"
        args.append(f"--mem={_word('mem', mem, _MEM_RE, '16G')}")
    if options["time"] is not None:
        limit = options["time"]
        if isinstance(limit, int) and not isinstance(limit, bool):
            limit = str(_count("time", limit))  # minutes, as Slurm counts them
        args.append(f"--time={_word('time', limit, _TIME_RE, '1:30:00')}")
    extra = options["srun_args"]
    if isinstance(extra, str) or not isinstance(extra, Sequence):
        _fail(
            f"srun_args must be a list of str such as ['--exclusive'], not {extra!r}",
            spawnkit.InvalidArgumentError,
        )
    for arg in extra:
        if not isinstance(arg, str):
            _fail(f"srun_args must hold str only, not {arg!r}", spawnkit.InvalidArgumentError)
        flag = arg.split("=", 1)[0]
        if flag in OWN_SRUN_OPTIONS or (flag[:2] in OWN_SRUN_OPTIONS and not arg.startswith("--")):
            _fail(
                f"srun_args may not set {flag!r}: the backend sets the step's tasks, input and "
                "name itself; use nprocs= for the number of tasks and queue_timeout= for waiting"
            )
    args.extend(extra)
    return args


# -- the handle -----------------------------------------------------------------------------


@final
class SlurmHandle:
    """One rank: a task of the step, connected to the job; its thread fills in the outcome."""

    def __init__(self, rank: int, conn: Any, notify: Callable[[], None]) -> None:
        self._rank = rank
        self._conn = conn
        self._notify = notify
        self._send_lock = threading.Lock()
        self._stopping: bool | None = None  # the strongest stop asked for, once one was
        self._sent = False
        self._outcome: plugin.Outcome | None = None
        self._thread: threading.Thread | None = None

    def run(self, path: list[str], data: bytes) -> None:
        self._thread = plugin.start_helper_thread(
            self._serve, path, data, name=f"spawnkit-slurm-rank-{self._rank}"
        )

    def _serve(self, path: list[str], data: bytes) -> None:
        try:
            with self._send_lock:
                if self._stopping is None:
                    self._conn.send((path, data))
                self._sent = True
                stopping = self._stopping
            if stopping is not None:  # a stop came while the spec was on its way
                self._send_stop(stopping)
            status, report = self._conn.recv()
        except (EOFError, OSError):
            self._outcome = self._lost()
        else:
            self._outcome = plugin.Outcome(
                status,
                _load_report(report),
                reason=_signal_reason(status) if not report else None,
                stopped=self._stopping is not None,
            )
        self._notify()

    def _lost(self) -> plugin.Outcome:
        if self._stopping is not None:
            return plugin.Outcome(-9, None, stopped=True, reason="its Slurm task was stopped")
        return plugin.Outcome(
            255, None, lost="its Slurm task ended without reporting (killed, or its node lost)"
        )

    def _send_stop(self, force: bool) -> None:
        try:
            self._conn.send(force)
        except OSError:  # the task has ended: nothing to stop
            pass

    @property
    def pid(self) -> int | None:
        return None  # a process of a Slurm node, not of this machine's tree

    def wait_fds(self) -> tuple[int, ...]:
        return ()  # the rank's thread notifies core

    def poll(self) -> plugin.Outcome | None:
        return self._outcome

    def stop(self, force: bool = False) -> None:
        if self._outcome is not None:
            return
        # Never wait here for a large spec still being sent: the thread sends the stop then.
        if not self._send_lock.acquire(blocking=False):
            self._stopping = force or bool(self._stopping)
            return
        try:
            self._stopping = force or bool(self._stopping)
            if self._sent:
                self._send_stop(force)
            else:  # the spec never left: the task ends when its connection does
                self._conn.close()
        finally:
            self._send_lock.release()

    def close(self) -> None:
        import socket

        # Core may close a rank it gave up waiting for: wake the thread's recv() first.
        try:
            with socket.fromfd(self._conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already by a stop
            pass
        if self._thread is not None:
            self._thread.join(HANDLE_THREAD_WAIT)
        self._conn.close()


def _load_report(data: bytes) -> plugin.Report | None:
    if not data:
        return None
    import pickle

    report = pickle.loads(data)
    return report if isinstance(report, plugin.Report) else None


def _signal_reason(status: int) -> str | None:
    if status >= 0:
        return None
    import signal

    try:
        return f"its worker on the Slurm node died of {signal.Signals(-status).name}"
    except ValueError:
        return f"its worker on the Slurm node died of signal {-status}"


def _address_toward_cluster() -> str:
    """This machine's address on the route to slurmctld: the one the nodes reach it at.

    It is what Slurm itself gives the tasks as ``SLURM_SRUN_COMM_HOST`` (srun's address as the
    controller sees it); the job listens there alone, not on every interface.
    """
    import socket

    try:
        out = subprocess.run(
            ["scontrol", "show", "config"],  # noqa: S607 - Slurm's tools are found on PATH
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SCONTROL_WAIT,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise spawnkit.LaunchError(
            f"backend {NAME!r}: cannot ask Slurm where its controller is (scontrol show "
            f"config: {e}); check that scontrol works here"
        ) from e
    host = re.search(r"^SlurmctldHost\[0\]\s*=\s*([^\s(]+)(?:\(([^)]+)\))?", out, re.M)
    port = re.search(r"^SlurmctldPort\s*=\s*([0-9]+)", out, re.M)
    if host is None or port is None:
        raise spawnkit.LaunchError(
            f"backend {NAME!r}: scontrol show config names no SlurmctldHost and "
            "SlurmctldPort; check the cluster's slurm.conf"
        )
    controller = host.group(2) or host.group(1)
    try:
        family, _, _, _, where = socket.getaddrinfo(
            controller, int(port.group(1)), type=socket.SOCK_DGRAM
        )[0]
        # A datagram socket's connect() only picks the route: nothing is sent.
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            return str(probe.getsockname()[0])
    except OSError as e:
        raise spawnkit.LaunchError(
            f"backend {NAME!r}: no route to the Slurm controller {controller!r}: {e}"
        ) from e


# -- the backend ----------------------------------------------------------------------------


@final
class SlurmBackend:
    """Runs each rank as a task of one Slurm job step.

    Args:
        nprocs: the job's number of ranks (given by core): the step's tasks.
        partition, account, qos, constraint: as srun's options of those names.
        nodes, ntasks_per_node, cpus_per_task, gpus_per_task: the step's shape (ints).
        mem: memory per node, ``"16G"`` or an int of megabytes.
        time: the time limit, minutes (int) or a Slurm time (``"1:30:00"``).
        srun_args: more srun options, a list of str (``["--exclusive"]``).
        queue_timeout: seconds to wait for the step to start and every task to connect back
            (default 60); past it, :class:`spawnkit.LaunchError`.
    """

    def __init__(
        self,
        nprocs: int,
        partition: str | None = None,
        nodes: int | None = None,
        ntasks_per_node: int | None = None,
        cpus_per_task: int | None = None,
        gpus_per_task: int | None = None,
        mem: str | int | None = None,
        time: str | int | None = None,
        account: str | None = None,
        qos: str | None = None,
        constraint: str | None = None,
        srun_args: Sequence[str] = (),
        queue_timeout: float = 60.0,
    ) -> None:
        options = dict(locals())
        args = _srun_options(nprocs, options)
        if isinstance(queue_timeout, bool) or not isinstance(queue_timeout, (int, float)):
            _fail(
                f"queue_timeout must be a number of seconds, not {queue_timeout!r}",
                spawnkit.InvalidArgumentError,
            )
        if not math.isfinite(queue_timeout) or queue_timeout <= 0:
            _fail(f"queue_timeout must be a finite number > 0, not {queue_timeout!r}")
        self._nprocs = nprocs
        self._allocation = os.environ.get("SLURM_JOB_ID", "")
        self._name = f"spawnkit-{os.urandom(8).hex()}"
        self._asked = " ".join([*args, f"queue_timeout={queue_timeout:g}"])
        self._conns: dict[int, Any] = {}
        self._step: str | None = None
        self._tail = bytearray()
        self._events: queue.Queue[Any] = queue.Queue()
        self._keeper: subprocess.Popen[bytes] | None = None
        self._control: int | None = None
        self._relay: threading.Thread | None = None
        self._stderr: Any = None
        self._listener: Any = None
        # The step starts with the first rank: a factory call alone (`spawnkit backends
        # --check`, a job refused before it starts) asks nothing of Slurm.
        self._pending: tuple[list[str], float] | None = (args, float(queue_timeout))

    def _launch(self, args: list[str], timeout: float) -> None:
        import socket

        secret = os.urandom(32)  # what secrets.token_bytes is, without its hashlib import
        host = _address_toward_cluster()
        self._listener = socket.create_server((host, 0), backlog=128)
        port = self._listener.getsockname()[1]
        command = [
            "srun",
            f"--ntasks={self._nprocs}",
            f"--job-name={self._name}",
            "--input=all",
            "--kill-on-bad-exit=0",  # a failed rank is core's to handle, as on every backend
            "--wait=0",
            *args,
        ]
        if not self._allocation:
            command.append(f"--immediate={max(1, math.ceil(timeout))}")
        command += [sys.executable, "-m", "spawnkit_backends._slurm_task"]
        control, self._control = os.pipe()
        plugin.mark_parent_only(self._control)
        try:
            self._keeper = subprocess.Popen(
                [
                    *(sys.executable, "-m", "spawnkit_backends._slurm_reaper"),
                    *(str(control), self._name, self._allocation, "--", *command),
                ],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(control,),
                start_new_session=True,  # no signal of the job's terminal or group reaches it
            )
        finally:
            os.close(control)
        assert self._keeper.stdin is not None
        assert self._keeper.stderr is not None
        self._keeper.stdin.write(f"{host} {port} {secret.hex()}\n".encode())
        self._keeper.stdin.close()  # the tasks read one line; srun ends their input here
        self._stderr = self._keeper.stderr
        self._relay = plugin.start_helper_thread(
            self._relay_stderr, self._stderr.fileno(), name="spawnkit-slurm-stderr"
        )
        plugin.start_helper_thread(self._accept, secret, name="spawnkit-slurm-accept")
        self._await_tasks(timeout)

    def _tell_keeper(self, line: str) -> None:
        if self._control is None:
            return
        try:
            os.write(self._control, f"{line}\n".encode())
        except OSError:  # it ended: so did srun
            pass

    def _relay_stderr(self, fd: int) -> None:
        """srun's stderr (its tasks' too) to the job's, keeping the end for error messages."""
        while chunk := os.read(fd, 65536):
            self._tail += chunk
            del self._tail[:-STDERR_TAIL]
            try:
                os.write(2, chunk)
            except OSError:
                pass
        self._events.put(None)  # srun ended

    def _accept(self, secret: bytes) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # the listener was shut down
            # Each proof in a thread of its own: a stray client that never answers holds
            # up nobody.
            plugin.start_helper_thread(self._authenticate, sock, secret, name="spawnkit-slurm-auth")

    def _authenticate(self, sock: Any, secret: bytes) -> None:
        from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

        conn = Connection(sock.detach())
        try:
            deliver_challenge(conn, secret)
            answer_challenge(conn, secret)
        except Exception:  # noqa: BLE001 - not a task of ours: the secret is the proof
            conn.close()
            return
        self._events.put(conn)

    def _await_tasks(self, timeout: float) -> None:
        # Outside an allocation srun itself gives up pending past the timeout (--immediate)
        # and says so; the margin lets it, and lets the tasks' interpreters start.
        deadline = time.monotonic() + timeout + TASK_START_WAIT
        places: dict[int, tuple[int, dict[str, str]]] = {}
        while len(places) < self._nprocs:
            try:
                event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._refuse(f"did not start in time (+{TASK_START_WAIT:g} s to start)")
            if event is None:
                self._refuse("was refused")
            try:
                # A task sends where it runs at once; one that does not is not waited for.
                said = event.poll(max(0.0, deadline - time.monotonic()))
                port, env = event.recv() if said else (0, {})
                rank = int(env["SLURM_PROCID"])
            except (EOFError, OSError, KeyError, ValueError):
                event.close()
                continue
            self._conns[rank] = event
            places[rank] = (port, env)
            if self._step is None:
                self._step = f"{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}"
                self._tell_keeper(f"step {self._step}")
        self._close_listener()
        master = places[0][1]["SLURMD_NODENAME"]
        self._envs = []
        for rank in range(self._nprocs):
            node = places[rank][1]["SLURMD_NODENAME"]
            self._envs.append(
                {
                    "RANK": str(rank),
                    "WORLD_SIZE": str(self._nprocs),
                    "LOCAL_RANK": places[rank][1]["SLURM_LOCALID"],
                    "LOCAL_WORLD_SIZE": str(
                        sum(p[1]["SLURMD_NODENAME"] == node for p in places.values())
                    ),
                    "MASTER_ADDR": master,
                    "MASTER_PORT": str(places[0][0]),
                }
            )

    def _refuse(self, what: str) -> NoReturn:
        self._end_step(wait=0)
        if self._relay is not None:
            self._relay.join(RELAY_END_WAIT)
        said = " ".join(self._tail.decode(errors="replace").split())
        where = f"in allocation {self._allocation}" if self._allocation else "as a new job"
        raise spawnkit.LaunchError(
            f"backend {NAME!r}: the step of {self._nprocs} task(s) {where} ({self._asked}) "
            f"{what}; Slurm said: {said or 'nothing'}. Check the options against `sinfo`, "
            "or raise queue_timeout="
        )

    def start(self, spec: plugin.WorkerSpec, notify: Callable[[], None]) -> SlurmHandle:
        import pickle

        if self._pending is not None:
            args, timeout = self._pending
            self._pending = None
            try:
                self._launch(args, timeout)
            except BaseException:
                self.close()
                raise
        handle = SlurmHandle(spec.rank, self._conns.pop(spec.rank), notify)
        data = pickle.dumps(spec.with_env(self._envs[spec.rank]), 5)
        handle.run([p for p in sys.path if isinstance(p, str) and p], data)
        return handle

    def _end_step(self, wait: float = STEP_END_WAIT) -> None:
        """Ends srun and its step: by itself once its tasks are gone, else by its keeper."""
        keeper = self._keeper
        if keeper is None:
            return
        try:
            keeper.wait(wait if self._step is not None else 0)
        except subprocess.TimeoutExpired:
            self._close_control()  # the keeper's signal to cancel the step and end srun
            try:
                keeper.wait(CANCEL_WAIT)
            except subprocess.TimeoutExpired:
                keeper.kill()
                keeper.wait(KILLED_EXIT_WAIT)
        self._keeper = None

    def _close_control(self) -> None:
        if self._control is not None:
            plugin.unmark_parent_only(self._control)
            os.close(self._control)
            self._control = None

    def _close_listener(self) -> None:
        import socket

        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        self._close_listener()
        for conn in self._conns.values():  # ranks never started: their tasks end
            conn.close()
        self._conns.clear()
        self._end_step()
        if self._relay is not None:
            self._relay.join(RELAY_END_WAIT)
            self._relay = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._close_control()
