"""Start, watch and stop a real `tritonserver` on the model repository — and own it: whatever way the launcher ends,
tritonserver and its Python-backend stubs end too (see watchdog.py), and a port held by another server is an error,
never an attachment.

On a CPU machine the binary is the one the `nvidia-pytriton` wheel ships (Triton 2.51 with the Python backend); in the
NGC image it is `/opt/tritonserver/bin/tritonserver`. Three things make the wheel's server run the Python backend
with this project's interpreter, all measured here:
- the stub for this Python version must sit in the backend folder (the wheel keeps one per version aside);
- `LD_LIBRARY_PATH` must hold the interpreter's `LIBDIR` (libpython) and the wheel's bundled libraries;
- the stub embeds Python and finds its `sys.prefix` through `PATH`, so this interpreter's `bin` goes first; else the
  stub runs the base interpreter, whose numpy 2 makes the backend return empty tensors.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from glotta.core.net import port_taken
from glotta.core.paths import cache_dir
from glotta.modeling.model_folder import ModelFolder

from .mpi import EngineMissing, engine_world_size, mpirun_command
from .watchdog import group_alive, remove_shm, stop_group

NGC_BINARY = Path("/opt/tritonserver/bin/tritonserver")
STOP_GRACE_S = 15.0  # tritonserver's own --exit-timeout-secs is 10: it gets the chance to finish first
log = logging.getLogger("glotta.triton")


class TritonLaunchError(RuntimeError):
    pass


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_binary() -> Path:
    env = os.environ.get("TRITONSERVER")
    if env:
        return Path(env)
    root = _wheel_root()
    if root and (root / "tritonserver" / "bin" / "tritonserver").exists():
        return root / "tritonserver" / "bin" / "tritonserver"
    if NGC_BINARY.exists():
        return NGC_BINARY
    raise TritonLaunchError("no tritonserver found: `pip install nvidia-pytriton`, or set TRITONSERVER=/path/to/binary")


def cpu_models(repository: Path) -> list[str]:
    """Models of the repository that run on this machine: Python-backend Glotta engines."""
    names = []
    for cfg in sorted(repository.glob("*/config.pbtxt")):
        text = cfg.read_text()
        if re.search(r'backend:\s*"python"', text) and ModelFolder.is_model(cfg.parent):
            names.append(cfg.parent.name)
    return names


@dataclass
class TritonServer:
    repository: Path
    models: list[str]
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    workdir: Path | None = None
    host: str = "127.0.0.1"  # the address every port binds to (a replica per loopback address in the tests)
    log_path: Path | None = field(default=None, compare=False)
    # the Python backend's shared-memory regions of this launch are named with it: removed after any stop
    shm_prefix: str = field(default_factory=lambda: f"glotta_{secrets.token_hex(4)}_", compare=False)

    def __post_init__(self) -> None:
        self.repository = Path(self.repository).resolve()
        self.workdir = Path(self.workdir or cache_dir() / "triton")
        # one log per launched instance: two gateways never write into each other's log
        self.log_path = Path(self.log_path or self.workdir / "logs" /
                             f"tritonserver-{self.host}-{self.http_port}-{time.strftime('%Y%m%d-%H%M%S')}.log")
        self.proc: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self._stopping = False  # stop() was asked for: an exit then is no death for watch() to report

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _backend_dir(self, binary: Path) -> Path:
        if binary == NGC_BINARY:
            return Path("/opt/tritonserver/backends")
        root = binary.parents[1]
        dst = self.workdir / "backends" / "python"
        dst.mkdir(parents=True, exist_ok=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise TritonLaunchError(f"the tritonserver wheel has no Python backend stub for Python {version}")
        for src in [*(root / "backends" / "python").glob("*.*"), stub]:
            target = dst / src.name
            if not target.exists() or target.stat().st_size != src.stat().st_size:
                shutil.copy2(src, target)
        return dst.parent

    def command(self) -> tuple[list[str], dict[str, str]]:
        binary = find_binary()
        cmd = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backend_dir(binary)}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--exit-timeout-secs=10",
        ]
        try:
            world, engines = engine_world_size(self.repository, self.models)
        except EngineMissing as e:
            raise TritonLaunchError(str(e)) from None
        if world > 1:  # a TensorRT-LLM engine with TP × PP > 1: one tritonserver rank per GPU
            cmd = mpirun_command(world, cmd, engines, self.shm_prefix)
        else:
            cmd.append(f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}")
        env = dict(os.environ)
        # The Python-backend stub finds its Python through PATH: this interpreter's, whose environment has what the
        # CPU models import (onnxruntime, tokenizers, Glotta) — in the image, the gateway's venv, made from the
        # image's own Python (the stub's version), which itself stays as NVIDIA built it.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if binary == NGC_BINARY:  # the image's libraries: its entrypoint set them up
            return cmd, env
        libs = [sysconfig.get_config_var("LIBDIR") or ""]
        root = _wheel_root()
        if root is not None:
            libs += [str(p) for p in sorted(root.parent.glob("*.libs"))]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*filter(None, libs), env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        return cmd, env

    def check_ports(self) -> None:
        """Refuse ports another process holds: attaching to someone else's Triton would serve its models, then lose
        them when it goes away."""
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            if port_taken(self.host, port):
                raise TritonLaunchError(
                    f"port {self.host}:{port} is in use (another tritonserver?): pick other ports (--triton-base-port)"
                    f", or pass --triton-url {self.host}:{self.grpc_port} to use the server that holds them")

    def start(self, timeout: float = 180.0, detach: bool = False) -> "TritonServer":
        """Start in a process group of its own; unless `detach`, a watchdog ends that group if this process dies."""
        if not self.models:
            raise TritonLaunchError(f"no model of {self.repository} can run on this machine")
        self.check_ports()
        cmd, env = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            # in the repository: relative engine paths (TRT-LLM's gpt_model_path) resolve from there
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=self.repository)
        log.info("tritonserver pid %d started; log %s", self.proc.pid, self.log_path)
        if not detach:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "glotta.server.triton.watchdog", str(os.getpid()), str(self.proc.pid),
                 str(STOP_GRACE_S), str(self.log_path), self.shm_prefix],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)
        if detach:
            state = {**asdict(self), "pid": self.proc.pid}
            state = {k: str(v) if isinstance(v, Path) else v for k, v in state.items()}
            (self.workdir / "server.json").write_text(json.dumps(state))
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self.stop()  # stubs it started may still run
                raise TritonLaunchError(f"tritonserver exited with {self.proc.returncode}; see {self.log_path}:\n"
                                        + self._log_tail())
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        raise TritonLaunchError(f"tritonserver not ready after {timeout:.0f}s; see {self.log_path}\n" + self._log_tail())

    def ready(self) -> bool:
        try:
            return httpx.get(self.http_url + "/v2/health/ready", timeout=5).status_code == 200  # slow when loaded
        except httpx.HTTPError:
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """End tritonserver and every stub of its group: SIGTERM, then SIGKILL after `grace` seconds; then its
        shared-memory regions go, and the ports are checked free."""
        if self.proc is None:
            return
        self._stopping = True
        pid = self.proc.pid
        if group_alive(pid):
            how = stop_group(pid, grace, reap=self.proc.poll)
            busy = busy_ports(self.host, (self.http_port, self.grpc_port, self.metrics_port))
            log.info("tritonserver pid %d and its stubs: %s; %s", pid, how,
                     f"ports still held: {busy}" if busy else
                     f"ports {self.http_port}, {self.grpc_port}, {self.metrics_port} free")
        self.proc.poll()
        removed = remove_shm(self.shm_prefix)
        if removed:
            log.info("removed %d shared-memory region(s) /dev/shm/%s*", removed, self.shm_prefix)
        if self._watchdog is not None and self._watchdog.poll() is None:
            self._watchdog.kill()
            self._watchdog.wait()

    def watch(self, on_death: Callable[[int], None]) -> threading.Thread:
        """Call `on_death(exit code)` if tritonserver exits without being stopped — after its stubs are killed and
        its shared memory removed. `glotta serve` then exits non-zero, and whatever supervises it (systemd,
        Kubernetes) restarts the pair: a gateway never keeps running in front of a Triton it no longer owns."""
        def wait() -> None:
            code = self.proc.wait()
            if self._stopping:
                return
            log.error("tritonserver pid %d exited with %s; see %s", self.proc.pid, code, self.log_path)
            stop_group(self.proc.pid, STOP_GRACE_S)  # its stubs, orphaned in its group
            remove_shm(self.shm_prefix)
            on_death(code)

        thread = threading.Thread(target=wait, name="tritonserver-watch", daemon=True)
        thread.start()
        return thread


def detached_state(workdir: Path | None = None) -> dict | None:
    path = Path(workdir or cache_dir() / "triton") / "server.json"
    return json.loads(path.read_text()) if path.exists() else None


def stop_detached(workdir: Path | None = None) -> bool:
    state = detached_state(workdir)
    if state is None:
        return False
    stop_group(state["pid"], STOP_GRACE_S)
    remove_shm(state.get("shm_prefix", ""))
    (Path(state["workdir"]) / "server.json").unlink(missing_ok=True)
    return True


def busy_ports(host: str, ports: tuple[int, ...], timeout: float = 5.0) -> list[int]:
    """The ports still held after a stop, once the kernel had `timeout` seconds to release them."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [p for p in ports if port_taken(host, p)]
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.1)
