"""What a worker sends its parent: framed messages of a kind byte, a length, a pickled body.

A worker sends ``STARTED`` once spawnkit's worker code runs, then at most one outcome
(``RESULT`` or ``ERROR``). The length prefix lets the parent tell a complete message from a
torn one without waiting for end-of-file, which never comes while a grandchild still holds
the descriptor.
"""

from __future__ import annotations

import os

STARTED = b"S"
RESULT = b"R"
ERROR = b"E"
_HEADER = 9  # kind byte + 8-byte big-endian length

# Exit statuses a worker uses when it cannot send the parent a message at all. The parent
# reads them only together with the missing message, so a program's own os._exit(85) after
# a normal report is never taken for them.
LOST_CHANNEL_STATUS = 85  # the result descriptor was closed or replaced inside the worker
NO_MAIN_GUARD_STATUS = 86  # the worker's import of the main script started another job


def frame(kind: bytes, body: bytes) -> bytes:
    """One whole message as bytes."""
    return kind + len(body).to_bytes(8, "big") + body


def send(fd: int, kind: bytes, body: bytes) -> None:
    """Write one whole message to ``fd`` (blocking)."""
    view = memoryview(frame(kind, body))
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Inbox:
    """Collects one worker's messages as they arrive on a non-blocking descriptor."""

    __slots__ = ("buffer", "eof", "fd", "started")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False
        self.started = False
        os.set_blocking(fd, False)

    def pump(self) -> None:
        """Read whatever is available now, without blocking."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
            self.buffer += chunk
        if not self.started and self.buffer[:1] == STARTED and len(self.buffer) >= _HEADER:
            size = int.from_bytes(self.buffer[1:_HEADER], "big")
            if len(self.buffer) >= _HEADER + size:
                self.started = True
                del self.buffer[: _HEADER + size]

    def message(self) -> tuple[bytes, bytes] | None:
        """``(kind, body)`` of the outcome once it arrived whole, else ``None``."""
        if len(self.buffer) < _HEADER:
            return None
        size = int.from_bytes(self.buffer[1:_HEADER], "big")
        if len(self.buffer) < _HEADER + size:
            return None
        return bytes(self.buffer[:1]), bytes(self.buffer[_HEADER : _HEADER + size])


class Report:
    """How a rank's code ended, as its worker tells it: a message and an exit status.

    ``body`` holds the pickled return value, or the pickled exception and its text, or
    nothing (the rank asked to exit with ``status``, as ``sys.exit(3)`` does); ``kind`` says
    which, in core's own terms. A backend never builds one: :func:`~spawnkit.plugin.run_rank`
    returns it, a local worker sends it down the result channel and exits with ``status``,
    and a remote worker's engine carries the object home as it is.
    """

    __slots__ = ("body", "kind", "status")

    def __init__(self, kind: bytes, body: bytes, status: int) -> None:
        self.kind = kind
        self.body = body
        self.status = status

    def __reduce__(self) -> tuple[type[Report], tuple[bytes, bytes, int]]:
        return (Report, (self.kind, self.body, self.status))

    def __repr__(self) -> str:
        return f"Report(kind={self.kind!r}, status={self.status}, {len(self.body)} bytes)"


class Outcome:
    """How a rank ended, as its backend hands it to core (``WorkerHandle.poll()``).

    Core alone decides what it means (a result, a failure, a rank it stopped).

    Attributes:
        status: the exit status: ``0`` success, ``N > 0`` an exit code, ``-N`` death by
            signal ``N`` (a remote engine maps its own causes onto these: ``-9`` for a
            worker its engine killed). Ignored when :attr:`lost` is set.
        report: the worker's :class:`Report`, if one arrived; ``None`` when the worker
            ended before it could send one.
        started: whether spawnkit's worker code ran at all (a worker that died while its
            backend prepared it did not).
        lost: why :attr:`status` is unknown, when it is (a fork server that died took it
            along); ``None`` normally.
        reason: for a worker that ended without a report, what its engine says happened
            (an actor's death cause), added to the failure's message.
        stopped: the worker ended because a stop reached it (its engine's cancel, its
            graceful stop): a rank that core stopped then counts as stopped, whatever its
            status and report. A worker's report of spawnkit's ``Terminated`` says the same.
    """

    __slots__ = ("lost", "reason", "report", "started", "status", "stopped")

    def __init__(
        self,
        status: int,
        report: Report | None = None,
        *,
        started: bool = True,
        lost: str | None = None,
        reason: str | None = None,
        stopped: bool = False,
    ) -> None:
        self.status = status
        self.report = report
        self.started = started
        self.lost = lost
        self.reason = reason
        self.stopped = stopped

    def __repr__(self) -> str:
        return f"Outcome(status={self.status}, report={self.report!r}, started={self.started})"
