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
