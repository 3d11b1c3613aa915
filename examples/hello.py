"""A job of N ranks: each says where it runs (`spawnkit run` puts its rank in front)."""

from __future__ import annotations

import os
import socket
import sys


def hello(rank: int, greeting: str = "hello") -> str:
    line = f"{greeting} from pid {os.getpid()} on {socket.gethostname()}"
    # One write for the whole line: ranks print at the same time, and print() may write the
    # text and its newline separately (PYTHONUNBUFFERED), mixing lines of several ranks.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return line
