"""Engine that forwards to a Triton model with the text interface, over gRPC bidirectional streaming.

The gateway keeps the model's tokenizer (from the model folder) for what the wire needs locally: request checks with
the same messages as the embedded engine, and Megatron's `segments`. The Triton side may be the Glotta CPU model, a
TensorRT-LLM ensemble or the FasterTransformer ensemble: optional inputs are sent only when the model declares them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import AsyncIterator

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from ..triton.interface import ALL_INPUTS, ALL_OUTPUTS, DEFAULTS, REQUIRED_INPUTS
from .protocol import Chunk, EngineError, EngineUnavailable, GenerationRequest, PromptInfo
from .tokenizer import Tokenizer, encode_prompt

log = logging.getLogger("glotta.engine.triton")



class TritonEngine:
    def __init__(self, url: str, model_dir: str | Path, name: str | None = None, poll_s: float = 1.0) -> None:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "glotta.json").read_text())
        self.name = name or meta.get("name") or model_dir.name
        self.url = url
        self.tokenizer = Tokenizer(model_dir / meta.get("tokenizer", "tokenizer.json"))
        self.max_context = int(meta["n_positions"])
        self.precision = "triton"
        self.poll_s = poll_s
        self._client: grpcclient.InferenceServerClient | None = None
        self._inputs: set[str] = set()
        self._outputs: list[str] = []
        self._decoupled = True
        self._ready = False
        self._inflight = 0
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        self._client = grpcclient.InferenceServerClient(self.url)
        await self._check()
        self._watch = asyncio.create_task(self._watch_loop())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._client is not None:
            await self._client.close()

    def ready(self) -> bool:
        return self._ready

    def stats(self) -> dict[str, int]:
        return {"waiting": 0, "running": self._inflight}

    def token_strings(self, token_ids: list[int]) -> list[str]:
        return [self.tokenizer.piece(t) for t in token_ids]

    def detokenize(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)

    async def _check(self) -> None:
        """Readiness, and which optional tensors the model offers (read again after each outage)."""
        assert self._client is not None
        try:
            ready = await self._client.is_model_ready(self.name, client_timeout=2)
            if ready and not self._ready:
                meta = await self._client.get_model_metadata(self.name, as_json=True, client_timeout=2)
                self._inputs = {i["name"] for i in meta["inputs"]}
                self._outputs = [o["name"] for o in meta["outputs"] if o["name"] in ALL_OUTPUTS]
                config = await self._client.get_model_config(self.name, as_json=True, client_timeout=2)
                policy = config["config"].get("model_transaction_policy", {})
                self._decoupled = bool(policy.get("decoupled", False))
                log.info("triton model %s ready at %s", self.name, self.url)
            self._ready = bool(ready)
        except (InferenceServerException, grpc.RpcError, OSError) as e:
            if self._ready:
                log.warning("triton model %s unavailable: %s", self.name, e)
            self._ready = False

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self._check()

    def _tensors(self, req: GenerationRequest) -> list[grpcclient.InferInput]:
        """Input tensors: the required ones, and each optional one only when it differs from the model's default
        (fewer tensors to build, send and parse on every request)."""
        s = req.sampling
        values = {
            "text_input": [req.prompt.encode("utf-8")],
            "max_tokens": [req.max_new_tokens],
            "temperature": [s.temperature],
            "top_k": [1 if s.greedy else s.top_k],
            "top_p": [s.top_p],
            "top_p_decay": [s.top_p_decay],
            "top_p_bound": [s.top_p_bound],
            "seed": [s.seed] if s.seed is not None else None,
            "stop_words": [w.encode("utf-8") for w in req.stop.stop_strings] or None,
            "stream": [req.stream and self._decoupled],
            "return_log_probs": [req.logprobs],
            "exclude_input_in_output": [True],
            "num_top_log_probs": [req.top_logprobs],
            "return_prompt_log_probs": [req.prompt_logprobs],
            "ignore_eos": [not req.stop.stop_on_eod],
            "stop_on_eol": [req.stop.stop_on_eol],
            "stop_on_double_eol": [req.stop.stop_on_double_eol],
            "add_bos": [req.add_bos],
            "prevent_newline_after_colon": [req.prevent_newline_after_colon],
        }
        tensors = []
        for name, v in values.items():
            if v is None or (name not in REQUIRED_INPUTS and v == [DEFAULTS.get(name)]):
                continue
            if name not in self._inputs:
                if name in ("stream", "exclude_input_in_output"):
                    continue  # a non-streaming ensemble answers once, with the generated text only
                raise EngineError(f"model {self.name} does not support `{name}`", name)
            dtype, np_dtype, _ = ALL_INPUTS[name]
            arr = np.asarray(v, dtype=np_dtype).reshape(1, -1)
            t = grpcclient.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            tensors.append(t)
        return tensors

    def _wanted_outputs(self, req: GenerationRequest) -> list[grpcclient.InferRequestedOutput]:
        skip = set()
        if not req.logprobs:
            skip.add("output_log_probs")
        if not req.top_logprobs:
            skip |= {"top_log_probs", "prompt_top_log_probs"}
        if not req.prompt_logprobs:
            skip |= {"prompt_log_probs", "prompt_top_log_probs"}
        return [grpcclient.InferRequestedOutput(n) for n in self._outputs if n not in skip]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        prompt_ids = encode_prompt(self.tokenizer, request, self.max_context)
        if not self._ready or self._client is None:
            raise EngineUnavailable(f"Triton at {self.url} is not ready for {self.name}")
        tensors = self._tensors(request)
        outputs = self._wanted_outputs(request)
        wanted = {o.name() for o in outputs}
        done = asyncio.Event()

        async def requests():
            yield {"model_name": self.name, "inputs": tensors, "outputs": outputs, "request_id": uuid.uuid4().hex}
            await done.wait()  # keep the stream open until our request is answered

        responses = self._client.stream_infer(requests())
        self._inflight += 1
        first = True
        try:
            async for result, error in responses:
                if error is not None:  # requests are validated here first: what Triton refuses is its own trouble
                    raise EngineUnavailable(f"Triton: {error.message()}")
                chunk = self._chunk(result, first, prompt_ids, wanted)
                first = False
                if not self._decoupled:  # one response per request: this is the last
                    chunk.finish_reason = chunk.finish_reason or "length"
                yield chunk
                if chunk.finish_reason:
                    return
            raise EngineUnavailable(f"Triton closed the stream for {self.name} before the end")
        except grpc.aio.AioRpcError as e:
            self._ready = False
            raise EngineUnavailable(f"Triton at {self.url}: {e.code().name}") from e
        finally:
            self._inflight -= 1
            done.set()
            responses.cancel()  # a client that went away cancels the request in Triton too

    def _chunk(self, result, first: bool, prompt_ids: list[int], wanted: set[str]) -> Chunk:
        def out(name: str):
            return result.as_numpy(name) if name in wanted else None

        text = out("text_output")
        ids = out("output_ids")
        lps = out("output_log_probs")
        tops = out("top_log_probs")
        finish = out("finish_reason")
        chunk = Chunk(
            text=b"".join(text.reshape(-1)).decode("utf-8") if text is not None else "",
            token_ids=[i for i in ids.reshape(-1).astype(int).tolist() if i >= 0] if ids is not None else [],
            logprobs=lps.reshape(-1).astype(float).tolist() if lps is not None and lps.size else None,
            top_logprobs=[json.loads(t) for t in tops.reshape(-1)] if tops is not None and tops.size else None,
            finish_reason=(finish.reshape(-1)[0].decode() or None) if finish is not None else None,
        )
        if first:
            p_ids, p_lps, p_tops = out("prompt_ids"), out("prompt_log_probs"), out("prompt_top_log_probs")
            chunk.prompt = PromptInfo(
                token_ids=p_ids.reshape(-1).astype(int).tolist() if p_ids is not None else prompt_ids,
                logprobs=p_lps.reshape(-1).astype(float).tolist() if p_lps is not None and p_lps.size else None,
                top_logprobs=[json.loads(t) for t in p_tops.reshape(-1)] if p_tops is not None and p_tops.size
                else None,
            )
        return chunk
