"""An installed Glotta works anywhere: the wheel carries the demo models, Triton configs, templates and web assets.

The wheel is built from the checkout's files (what a clean clone holds), installed with `--no-deps` into a fresh
virtual environment outside the checkout, and run from an empty folder. Its dependencies come from the test
environment's site-packages through a plain path in a `.pth` file (not processed as a site directory, so the checkout's
editable install stays invisible): downloading them again would test PyPI, not the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from glotta.core.net import free_port, free_port_block

ROOT = Path(__file__).resolve().parents[1]


def _sh(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    src = tmp / "src"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLOTTA_", "PYTHON", "VIRTUAL_ENV"))}
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src],
        tmp, env)
    wheel = next((tmp / "dist").glob("glotta-*.whl"))
    venv = tmp / "venv"
    _sh([sys.executable, "-m", "venv", venv], tmp, env)
    py = venv / "bin" / "python"
    _sh([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp, env)
    site = Path(_sh([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_glotta_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "GLOTTA_CACHE": str(tmp / "cache"),
            "HOME": str(tmp / "home"), "COLUMNS": "200"}  # rich tables unwrapped
    empty = tmp / "empty"
    empty.mkdir()
    return wheel, {"venv": venv, "cwd": empty, "env": env}


def test_the_wheel_carries_what_serving_needs(installed):
    wheel, _ = installed
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("glotta-fr-tiny", "glotta-es-tiny"):
        for f in ("config.pbtxt", "glotta.json", "tokenizer.json", "1/model.onnx", "1/model.py"):
            assert f"glotta/model_repository/{model}/{f}" in names, (model, f)
    assert "glotta/model_repository/glotta-fr-trtllm-engine/1/.tmp" in names  # the version folder Triton needs
    assert "glotta/server/entrypoints/playground/playground.html" in names
    assert "glotta/server/templates/builtin/sentiment-fr.yaml" in names
    assert "glotta/server/grpc_api/glotta.proto" in names


def test_installed_glotta_serves_from_an_empty_folder(installed):
    _, inst = installed
    venv, cwd, env = inst["venv"], inst["cwd"], inst["env"]
    where = _sh([venv / "bin" / "python", "-c", "import glotta.core.paths as p; print(p.__file__); "
                 "print(p.model_repository())"], cwd, env).stdout.split()
    assert all(line.startswith(str(venv)) for line in where), where  # the wheel's code and the wheel's models
    port = free_port()
    log = (cwd.parent / "serve.log").open("wb")
    proc = subprocess.Popen([venv / "bin" / "glotta", "serve", "--port", str(port), "--grpc-port", str(free_port()),
                             "--threads", "1"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert proc.poll() is None, (cwd.parent / "serve.log").read_text()
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert {m["id"] for m in models} == {"glotta-fr-tiny", "glotta-es-tiny"}
        listed = _sh([venv / "bin" / "glotta", "prompt", "list", "--url", f"127.0.0.1:{port}"], cwd, env).stdout
        assert "sentiment-fr" in listed and "translation-es" in listed
        text = _sh([venv / "bin" / "glotta", "generate", "Le système", "--url", f"127.0.0.1:{port}",
                    "--max-tokens", "5", "--temperature", "0"], cwd, env).stdout
        assert text.startswith("Le système") and len(text.strip()) > len("Le système")
        assert httpx.get(f"http://127.0.0.1:{port}/playground").status_code == 200
    finally:
        proc.terminate()
        proc.wait(60)
    assert list(cwd.iterdir()) == []  # nothing written where it was run


def test_installed_glotta_starts_triton_on_its_own_repository(installed):
    _, inst = installed
    venv, cwd, env = inst["venv"], inst["cwd"], inst["env"]
    base = free_port_block(3)
    glotta = venv / "bin" / "glotta"
    started = _sh([glotta, "triton", "start", "--base-port", str(base), "--model", "glotta-fr-tiny"], cwd, env).stdout
    try:
        assert "glotta-fr-tiny" in started
        assert _sh([glotta, "triton", "status"], cwd, env).returncode == 0
        r = httpx.post(f"http://127.0.0.1:{base}/v2/models/glotta-fr-tiny/generate",
                       json={"text_input": "Le système", "max_tokens": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["text_output"], r.text
    finally:
        _sh([glotta, "triton", "stop"], cwd, env)
    assert list(cwd.iterdir()) == []
