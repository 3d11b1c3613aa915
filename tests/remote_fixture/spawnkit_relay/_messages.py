"""Framed pickles over a socket, both ways: an 8-byte length, then the pickle."""

from __future__ import annotations

import pickle
import socket
from typing import Any


def send(sock: socket.socket, message: Any) -> None:
    body = pickle.dumps(message, 5)
    sock.sendall(len(body).to_bytes(8, "big") + body)


def receive(sock: socket.socket) -> Any:
    """The next message, or ``None`` once the other side closed the socket."""
    head = _exactly(sock, 8)
    if head is None:
        return None
    body = _exactly(sock, int.from_bytes(head, "big"))
    if body is None:
        return None
    return pickle.loads(body)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        try:
            chunk = sock.recv(size - len(chunks))
        except OSError:
            return None
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
