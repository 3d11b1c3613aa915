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
