"""Engine that forwards to a Triton model with the text interface, over gRPC bidirectional streaming.

The gateway keeps the model's tokenizer (from the model folder) for what the wire needs locally: request checks with
the same messages as the embedded engine, and Megatron's `segments`. The Triton side may be the Glotta CPU model, a
TensorRT-LLM ensemble or the FasterTransformer ensemble: optional inputs are sent only when the model declares them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import uuid
from pathlib import Path
from typing import AsyncIterator

import grpc
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from glotta.core.errors import GlottaError, unavailable
from glotta.modeling.model_folder import ModelFolder

from ..engine.interface import Chunk, GenerationRequest
from ..engine.text_io import encode_prompt
from .contract import ALL_INPUTS, ALL_OUTPUTS, chunk_from_arrays, request_to_arrays

log = logging.getLogger("glotta.engine.triton")
# Several replicas: gRPC's own client-side load balancing spreads the calls round-robin over the replicas it is
# connected to; a replica that dies drops out when its connection fails, and rejoins when it accepts connections
# again. No gRPC health checking: Triton does not serve grpc.health.v1 (asking for it only logs "Watch
# UNIMPLEMENTED; disabling health checks"), so a replica that is up but not ready is taken out by whoever runs it —
# Kubernetes' readiness probe removes its address from the headless Service's DNS answer.
LATE_CHECKS = 3  # readiness checks that time out in a row before the model counts as unavailable
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def grpc_target(urls: str | list[str]) -> str:
    """One gRPC target for one or several Triton endpoints: `host:port`, a list of them (a static `ipv4:` / `ipv6:`
    address list, or `dns:` names), or a resolver URI such as `dns:///triton-headless:8001` (a Kubernetes headless
    Service: one address per Triton pod)."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if len(urls) == 1:
        return urls[0]
    if any("://" in u or u.startswith(("dns:", "ipv4:", "ipv6:", "unix:")) for u in urls):
        raise ValueError(f"several Triton endpoints must be plain HOST:PORT addresses, not {urls}")
    hosts = [u.rsplit(":", 1)[0] for u in urls]
    if all(_is_ipv4(h) for h in hosts):
        return "ipv4:" + ",".join(urls)
    raise ValueError(f"several Triton endpoints must be IPv4 addresses (or one dns:/// name resolving to all): {urls}")


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


class TritonEngine:
    def __init__(self, url: str | list[str], model_dir: str | Path, name: str | None = None,
                 poll_s: float = 1.0) -> None:
        folder = ModelFolder.open(model_dir)
        self.name = name or folder.name
        self.url = grpc_target(url)
        self.tokenizer = folder.tokenizer()
        self.max_context = folder.max_context
        self.max_prompt = folder.max_prompt  # a GPU engine's build limit, where its export wrote one
        self.precision = "triton"
        self.chat_template = folder.chat_template()  # None: chat is refused (or --chat-template)
        self.poll_s = poll_s
        self._client: grpcclient.InferenceServerClient | None = None
        self._inputs: set[str] = set()
        self._outputs: list[str] = []
        self._decoupled = True
        self._batch_dim = False
        self._ready = False
        self._late = 0  # readiness checks in a row that timed out
        self._inflight = 0
        self._waiting = 0
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
                   ("grpc.service_config", SERVICE_CONFIG), ("grpc.keepalive_time_ms", 10_000),
                   ("grpc.keepalive_timeout_ms", 5_000), ("grpc.initial_reconnect_backoff_ms", 500),
                   ("grpc.max_reconnect_backoff_ms", 2_000)]
        self._client = grpcclient.InferenceServerClient(self.url, channel_args=options)
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
        """`waiting`: sent to Triton, no token back yet (queued there) — the queue depth autoscaling reads."""
        return {"waiting": self._waiting, "running": self._inflight - self._waiting}

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
                self._batch_dim = int(config["config"].get("max_batch_size", 0)) > 0
                log.info("triton model %s ready at %s", self.name, self.url)
            self._ready, self._late = bool(ready), 0
        except (InferenceServerException, grpc.RpcError, OSError) as e:
            # a server too busy to answer within the poll's deadline is not a down one: a loaded CPU machine
            # answers late while it generates. A refused connection, or LATE_CHECKS late answers in a row, are.
            late = "DEADLINE_EXCEEDED" in str(e)
            self._late = self._late + 1 if late else 0
            if late and self._ready and self._late < LATE_CHECKS:
                log.info("triton model %s answered its readiness check late (%d in a row)", self.name, self._late)
                return
            if self._ready:
                log.warning("triton model %s unavailable: %s", self.name, e)
            self._ready = False

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self._check()

    def _tensors(self, req: GenerationRequest) -> list[grpcclient.InferInput]:
        try:
            arrays = request_to_arrays(req, self._inputs, self._decoupled, self._batch_dim)
        except GlottaError as e:
            raise GlottaError(e.kind, f"model {self.name}: {e.message}", e.param) from None
        tensors = []
        for name, arr in arrays.items():
            t = grpcclient.InferInput(name, list(arr.shape), ALL_INPUTS[name][0])
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
        prompt_ids = await encode_prompt(self.tokenizer, request, self.max_context, self.max_prompt)
        if not self._ready or self._client is None:
            raise unavailable(f"Triton at {self.url} is not ready for {self.name}")
        tensors = self._tensors(request)
        outputs = self._wanted_outputs(request)
        wanted = {o.name() for o in outputs}
        done = asyncio.Event()

        async def requests():
            yield {"model_name": self.name, "inputs": tensors, "outputs": outputs, "request_id": uuid.uuid4().hex}
            await done.wait()  # keep the stream open until our request is answered

        responses = self._client.stream_infer(requests())
        self._inflight += 1
        self._waiting += 1
        queued, first, finished = True, True, False
        try:
            async for result, error in responses:
                if queued:
                    self._waiting, queued = self._waiting - 1, False
                if error is not None:  # requests are validated here first: what Triton refuses is its own trouble
                    raise unavailable(f"Triton: {error.message()}")
                chunk = self._chunk(result, first, prompt_ids, wanted)
                first = False
                if not self._decoupled:  # one response per request: this is the last
                    chunk.finish_reason = chunk.finish_reason or "length"
                finished = chunk.finish_reason is not None
                yield chunk
                if finished:
                    return
            raise unavailable(f"Triton closed the stream for {self.name} before the end")
        except grpc.aio.AioRpcError as e:  # this request's replica failed; the watch loop decides about readiness
            raise unavailable(f"Triton at {self.url}: {e.code().name} {e.details() or ''}".rstrip()) from e
        finally:
            self._inflight -= 1
            if queued:
                self._waiting -= 1
            done.set()  # a finished request closes its stream (half-close: Triton ends the call cleanly)
            if not finished:  # a client that went away, or an error: cancel the request in Triton too.
                # Only then: Triton 2.51 leaks the state of a stream cancelled after its final response, and a model
                # with over 8 such states never unloads (exit timeout, stubs killed).
                responses.cancel()

    def _chunk(self, result, first: bool, prompt_ids: list[int], wanted: set[str]) -> Chunk:
        return chunk_from_arrays(lambda name: result.as_numpy(name) if name in wanted else None, first, prompt_ids)
