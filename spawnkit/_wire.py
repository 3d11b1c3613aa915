"""The one message a worker sends its parent: a kind byte, a length, a pickled body.

The length prefix lets the parent tell a complete message from a torn one without waiting
for end-of-file, which never comes while a grandchild still holds the descriptor.
"""

from __future__ import annotations

import os

RESULT = b"R"
ERROR = b"E"
_HEADER = 9  # kind byte + 8-byte big-endian length


def send(fd: int, kind: bytes, body: bytes) -> None:
    """Write one whole message to ``fd`` (blocking)."""
    view = memoryview(kind + len(body).to_bytes(8, "big") + body)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Inbox:
    """Collects one worker's message as it arrives on a non-blocking descriptor."""

    __slots__ = ("buffer", "eof", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False
        os.set_blocking(fd, False)

    def pump(self) -> None:
        """Read whatever is available now, without blocking."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
            self.buffer += chunk

    def message(self) -> tuple[bytes, bytes] | None:
        """``(kind, body)`` once a whole message arrived, else ``None``."""
        if len(self.buffer) < _HEADER:
            return None
        size = int.from_bytes(self.buffer[1:_HEADER], "big")
        if len(self.buffer) < _HEADER + size:
            return None
        return bytes(self.buffer[:1]), bytes(self.buffer[_HEADER : _HEADER + size])
