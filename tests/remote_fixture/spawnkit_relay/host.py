"""The host: ``python -m spawnkit_relay.host FD``. Forks a worker per rank it is asked for,
follows each with a pidfd, and sends its outcome back over the socket ``FD``.

A worker here is someone else's process, as a cluster engine's would be: it runs only the
part every worker needs (``spawnkit.plugin.run_rank``), with no process group, signal handler
or parent watch of spawnkit's. When the job's end of the socket closes (the job ended, or
its process died), the host kills every worker still running and exits: its own
fate-sharing.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import socket
import sys
from typing import Any

from . import _messages

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _run(spec: Any, main: dict[str, Any], report_w: int) -> int:
    """In the forked worker: run the rank, write the pickled report, return the status."""
    from spawnkit import plugin
    from spawnkit._worker import error_body  # how the failure of the preparation travels

    try:
        plugin.load_main(main)
        report = plugin.run_rank(spec)
    except BaseException as exc:
        report = plugin.Report(b"E", error_body(exc), 1)
    data = pickle.dumps(report, 5)
    view = memoryview(data)
    while view:
        view = view[os.write(report_w, view) :]
    return int(report.status)


class Host:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.workers: dict[int, tuple[int, int, int, bytearray]] = {}  # rank -> pid, pidfd, r, buf
        self.main: dict[str, Any] = {"kind": "none", "reason": "the job sent no hello"}

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    message = _messages.receive(self.sock)
                    if message is None:
                        self.end_all()
                        return
                    self.handle(message)
                elif key.data[0] == "report":
                    self.read_report(key.data[1])
                else:
                    self.reap(key.data[1])

    def handle(self, message: Any) -> None:
        kind = message[0]
        if kind == "hello":
            sys.path[:] = message[1]
            self.main = message[2]
        elif kind == "start":
            self.start(message[1], message[2])
        elif kind == "stop":
            rank, force = message[1], message[2]
            if rank in self.workers:
                _signal_group(self.workers[rank][0], signal.SIGKILL if force else signal.SIGTERM)

    def start(self, rank: int, spec: Any) -> None:
        report_r, report_w = os.pipe()
        # The fork ignores the stop signals as the host does until it puts the defaults
        # back, and a stop may come before that: blocked, they wait for it (Linux keeps a
        # blocked signal pending, ignored or not) instead of being lost.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                # Its own group, so a stop takes whatever the rank started along; the
                # default dispositions, which the host's are not.
                os.setpgid(0, 0)
                for signum in (signal.SIGTERM, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                self.selector.close()
                for _, pidfd, other_r, _ in self.workers.values():
                    os.close(pidfd)
                    os.close(other_r)
                self.sock.close()
                os.close(report_r)
                status = _run(spec, self.main, report_w)
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(report_w)
        try:
            os.setpgid(pid, pid)
        except OSError:  # it did so itself, or has ended already
            pass
        os.set_blocking(report_r, False)
        pidfd = os.pidfd_open(pid)
        self.workers[rank] = (pid, pidfd, report_r, bytearray())
        self.selector.register(pidfd, selectors.EVENT_READ, ("ended", rank))
        self.selector.register(report_r, selectors.EVENT_READ, ("report", rank))

    def read_report(self, rank: int) -> None:
        # Read as it comes: a report bigger than the pipe would otherwise block its writer.
        if rank not in self.workers:  # reaped in this same round
            return
        _, _, report_r, buffer = self.workers[rank]
        if not _drain(report_r, buffer):
            self.selector.unregister(report_r)

    def reap(self, rank: int) -> None:
        pid, pidfd, report_r, buffer = self.workers.pop(rank)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, wait_status = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        if _drain(report_r, buffer):  # a grandchild still holds the pipe: the report is whole
            self.selector.unregister(report_r)
        os.close(report_r)
        _signal_group(pid, signal.SIGKILL)  # whatever the rank left in its group
        report = pickle.loads(bytes(buffer)) if buffer else None
        reason = None
        if report is None and status < 0:
            reason = f"the relay host saw the worker die of {signal.Signals(-status).name}"
        _messages.send(self.sock, ("ended", rank, status, report, reason))

    def end_all(self) -> None:
        for pid, pidfd, report_r, _ in self.workers.values():
            _signal_group(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(pidfd)
            os.close(report_r)
        self.workers.clear()


def _drain(fd: int, buffer: bytearray) -> bool:
    """Read what is there into ``buffer``; whether the pipe may still bring more."""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        buffer += chunk


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except OSError:
        pass


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    # The job stops ranks through the socket, never by signalling the host.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # Loaded once here, every worker forked from the host has them already.
    import spawnkit._worker
    import spawnkit.plugin  # noqa: F401

    Host(sock).serve()


if __name__ == "__main__":
    main()
