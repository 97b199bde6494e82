"""Fixtures: a real gateway (uvicorn subprocess) on the shipped models, and small models the tests build."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from glotta.clients.local_gateway import LocalGateway
from glotta.core.net import free_port, free_port_block  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "model_repository"
FR, ES = "glotta-fr-tiny", "glotta-es-tiny"


def wait_for(predicate, timeout: float) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


class Gateway(LocalGateway):
    """A real `glotta serve` (uvicorn subprocess), with its gRPC port open too."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        super().__init__(args, log, env, grpc_port=None, timeout=120)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that talked to a gateway shows the end of that gateway's log (what CI keeps of a failure)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("gateway", "triton_gateway"):
            gw = getattr(item, "funcargs", {}).get(name)
            if isinstance(gw, LocalGateway):
                report.sections.append((f"{name} log (tail)", "\n".join(gw.log_text().splitlines()[-40:])))


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


@pytest.fixture(scope="session")
def chat_gateway(tmp_path_factory):
    """(folder, model, gateway): a Hugging Face Qwen2 folder with the real Qwen2.5 chat template, beside the shipped
    French model, behind one `glotta serve`."""
    from .hf_folders import hf_folder

    root = tmp_path_factory.mktemp("chat")
    folder, model, _ = hf_folder("qwen2", root / "qwen2")
    shutil.copy(ROOT / "tests" / "fixtures" / "public_configs" / "qwen2.5-0.5b-instruct" / "chat_template.jinja",
                folder / "chat_template.jinja")
    gw = Gateway(["--model", str(folder), "--model", FR, "--threads", "1"], root / "serve.log",
                 env={"GLOTTA_CACHE": str(root / "cache"), "GLOTTA_MODEL_REPOSITORY": str(REPO)})
    yield folder, model, gw
    gw.stop()


@pytest.fixture()
def http(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        yield c


def write_spec(out: Path, family: str, hf_config: dict, weights: str = "exchange", **tokenizer) -> None:
    """glotta.json for a test model, through the family's own reading of its Hugging Face config."""
    from glotta.modeling.registry import get
    from glotta.modeling.spec import ModelSpec, TokenizerSpec

    arch = get(family).from_hf_config(hf_config)
    ModelSpec(name=out.name, family=family, architecture=arch, weights=weights,
              tokenizer=TokenizerSpec(**tokenizer)).write(out)


def build_test_model(out: Path, eod_always: bool = False, seed: int = 0, always: str | None = None):
    """A small random GPT-2 exported the way shipped models are, with the shipped French tokenizer.

    Weights are drawn with a large spread so greedy decoding wanders over many tokens instead of repeating one: a
    parity check on a model that always says the same token proves little. With `eod_always` the final layer norm
    emits a constant vector that the EOD embedding matches best, so EOD is always the most likely next token;
    `always` does the same for the token of that text (e.g. "\n", so that a blank line really comes).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from glotta.core.tokenizer import Tokenizer
    from glotta.export.onnx_export import export_gpt2_onnx

    tok = Tokenizer(REPO / FR / "tokenizer.json")
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=tok.vocab_size, n_positions=128, n_embd=64, n_layer=2, n_head=4, initializer_range=0.3,
        bos_token_id=tok.eod_id, eos_token_id=tok.eod_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    if eod_always or always is not None:
        (token,) = [tok.eod_id] if eod_always else tok.encode(always)
        with torch.no_grad():
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(torch.randn(cfg.n_embd))
            model.transformer.wte.weight[token] = model.transformer.ln_f.bias * 10
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / FR / "tokenizer.json", out / "tokenizer.json")
    write_spec(out, "gpt2", cfg.to_dict())
    export_gpt2_onnx(model, out / "1" / "model.onnx")
    return model, tok


@pytest.fixture(scope="session")
def test_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "random-gpt"
    model, tok = build_test_model(out)
    return out, model, tok


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    """HF `generate`, greedy, exactly n tokens (no end-of-text stop: the engine is told the same)."""
    import copy

    import torch

    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id, cfg.pad_token_id, cfg.do_sample, cfg.max_new_tokens = [], 0, False, n  # []: never stop
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=cfg)
    return out[0, len(ids):].tolist()


def engine_greedy(engine, prompts: list[str], n: int) -> list[tuple[list[int], list[float]]]:
    """(greedy ids, prompt log-probs) of each prompt, all at once through one embedded engine (started, stopped)."""
    import asyncio

    from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions

    async def run():
        await engine.start()
        try:
            async def one(p):
                ids, lp = [], None
                req = GenerationRequest(p, n, SamplingParams(top_k=1), StopConditions(stop_on_eod=False),
                                        prompt_logprobs=True)
                async for c in engine.generate(req):
                    ids += c.token_ids
                    lp = c.prompt.logprobs if c.prompt is not None else lp
                return ids, lp
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await engine.stop()

    return asyncio.run(run())


def assert_hf_parity(model, tok, prompts: list[str], results: list, n: int, min_distinct: int) -> None:
    """Each (generated ids, prompt log-probs) of the engine equals HF's greedy tokens and prompt log-probs."""
    import torch

    distinct = set()
    for prompt, (ids, prompt_lp) in zip(prompts, results):
        prompt_ids = tok.encode(prompt)
        assert ids == hf_greedy(model, prompt_ids, n), prompt
        distinct |= set(ids)
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids])).logits[0]
        targets = torch.tensor(prompt_ids[1:], dtype=torch.long)
        ref = torch.log_softmax(logits, -1)[torch.arange(len(prompt_ids) - 1), targets]
        np.testing.assert_allclose(prompt_lp, ref.numpy(), atol=1e-4)
    assert len(distinct) > min_distinct, "the test model is too repetitive to prove parity"
