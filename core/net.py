"""Free loopback ports, for the servers Glotta starts in tests, benchmarks and load tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(n: int = 3) -> int:
    """A loopback base port with the next n - 1 ports free too (Triton takes HTTP, gRPC and metrics side by side)."""
    for _ in range(100):
        base = free_port()
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError("no block of free ports")


def port_taken(host: str, port: int) -> bool:
    """Whether another process listens on (or holds) `host:port` — asked before starting a server, so that a clash is
    one clear line instead of a server's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gRPC bind: TIME_WAIT is no clash
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
