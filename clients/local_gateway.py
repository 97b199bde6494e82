"""A `glotta serve` started as a child process on loopback and waited for until `/health/ready` answers 200 — what the
tests, the benchmarks and `glotta loadtest` run against. The process is the caller's: `stop()` (or leaving the `with`
block) ends it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from glotta.core.net import free_port


class LocalGateway:
    def __init__(self, args: list[str], log: Path | None = None, env: dict | None = None, port: int | None = None,
                 grpc_port: int | None = 0, timeout: float = 180.0) -> None:
        self.port = port or free_port()
        self.grpc_port = free_port() if grpc_port is None else grpc_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "glotta.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--grpc-port", str(self.grpc_port), *args]
        out = log.open("wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self._wait(timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def _wait(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"glotta serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"glotta serve not ready after {timeout:.0f} s:\n{self.log_text()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "LocalGateway":
        return self

    def __exit__(self, *_) -> None:
        self.stop()
