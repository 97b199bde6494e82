"""Fixtures: a real gateway (uvicorn subprocess) on the shipped models, and small models the tests build."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from glotta.server.triton.launcher import free_port_block  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "model_repository"
FR, ES = "glotta-fr-tiny", "glotta-es-tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "glotta.server.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--grpc-port", str(self.grpc_port)]
        self.proc = subprocess.Popen(
            cmd + args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gateway not ready:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> Gateway:
    """The shipped French and Spanish models behind a real uvicorn, as `glotta serve` runs them."""
    log = tmp_path_factory.mktemp("gateway") / "serve.log"
    gw = Gateway(["--model", FR, "--model", ES, "--threads", "1"], log, env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """A real tritonserver (the nvidia-pytriton wheel's binary) serving the CPU models of the repository."""
    from glotta.server.triton.launcher import TritonServer

    server = TritonServer(REPO, [FR, ES], free_port(), free_port(), free_port(),
                          workdir=tmp_path_factory.mktemp("triton")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_gateway(tmp_path_factory, triton) -> Gateway:
    log = tmp_path_factory.mktemp("gateway-triton") / "serve.log"
    gw = Gateway(["--model", FR, "--model", ES, "--triton-url", triton.grpc_url], log,
                 env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    yield gw
    gw.stop()


@pytest.fixture()
def http(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        yield c


def build_test_model(out: Path, eod_always: bool = False, seed: int = 0):
    """A small random GPT-2 exported the way shipped models are, with the shipped French tokenizer.

    Weights are drawn with a large spread so greedy decoding wanders over many tokens instead of repeating one: a
    parity check on a model that always says the same token proves little. With `eod_always` the final layer norm
    emits a constant vector that the EOD embedding matches best, so EOD is always the most likely next token.
    """
    import torch
    from glotta.export.onnx_export import export_gpt2_onnx
    from glotta.server.engine.tokenizer import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = Tokenizer(REPO / FR / "tokenizer.json")
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=tok.vocab_size, n_positions=128, n_embd=64, n_layer=2, n_head=4, initializer_range=0.3,
        bos_token_id=tok.eod_id, eos_token_id=tok.eod_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    if eod_always:
        with torch.no_grad():
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(torch.randn(cfg.n_embd))
            model.transformer.wte.weight[tok.eod_id] = model.transformer.ln_f.bias * 10
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / FR / "tokenizer.json", out / "tokenizer.json")
    meta = {"name": out.name, "n_positions": cfg.n_positions, "vocab_size": cfg.vocab_size}
    (out / "glotta.json").write_text(json.dumps(meta))
    export_gpt2_onnx(model, out / "1" / "model.onnx")
    return model, tok


@pytest.fixture(scope="session")
def test_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "random-gpt"
    model, tok = build_test_model(out)
    return out, model, tok
