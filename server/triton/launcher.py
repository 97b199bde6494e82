"""Start, watch and stop a real `tritonserver` on the model repository.

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
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from glotta.core.model_folder import ModelFolder
from glotta.core.paths import cache_dir

NGC_BINARY = Path("/opt/tritonserver/bin/tritonserver")


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

    def __post_init__(self) -> None:
        self.repository = Path(self.repository).resolve()
        self.workdir = Path(self.workdir or cache_dir() / "triton")
        self.proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

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
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--exit-timeout-secs=10",
        ]
        env = dict(os.environ)
        libs = [sysconfig.get_config_var("LIBDIR") or ""]
        root = _wheel_root()
        if root is not None:
            libs += [str(p) for p in sorted(root.parent.glob("*.libs"))]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*filter(None, libs), env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return cmd, env

    def start(self, timeout: float = 180.0, detach: bool = False) -> "TritonServer":
        if not self.models:
            raise TritonLaunchError(f"no model of {self.repository} can run on this machine")
        cmd, env = self.command()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach)
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
                raise TritonLaunchError(f"tritonserver exited with {self.proc.returncode}; see {self.log_path}:\n"
                                        + self._log_tail())
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        raise TritonLaunchError(f"tritonserver not ready after {timeout:.0f}s; see {self.log_path}\n" + self._log_tail())

    def ready(self) -> bool:
        try:
            return httpx.get(self.http_url + "/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def detached_state(workdir: Path | None = None) -> dict | None:
    path = Path(workdir or cache_dir() / "triton") / "server.json"
    return json.loads(path.read_text()) if path.exists() else None


def stop_detached(workdir: Path | None = None) -> bool:
    state = detached_state(workdir)
    if state is None:
        return False
    try:
        os.killpg(state["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    (Path(state["workdir"]) / "server.json").unlink(missing_ok=True)
    return True
