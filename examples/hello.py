"""A job of N ranks: each reports where it runs, then rank 0 prints the gathered results."""

from __future__ import annotations

import os
import socket


def hello(rank: int, greeting: str = "hello") -> str:
    line = f"[rank {rank}] {greeting} from pid {os.getpid()} on {socket.gethostname()}"
    print(line, flush=True)
    return line
