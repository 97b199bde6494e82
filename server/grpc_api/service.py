"""`glotta.v1.TextGeneration` served beside REST, on the same engines, with `/v1/completions` semantics.

Requests are turned into the OpenAI protocol's pydantic model, so validation and defaults are the REST ones; errors map
to INVALID_ARGUMENT (400), NOT_FOUND (404) and UNAVAILABLE (503) with the same messages.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import grpc
from pydantic import ValidationError

from ..engine.protocol import EngineError, EngineUnavailable
from ..entrypoints.openai.protocol import CompletionRequest
from ..entrypoints.openai.serving import FINISH_REASONS, to_engine_request
from ..generation import collect, stream
from ..models import ModelNotFound, ModelSet
from . import load_stubs

pb2, pb2_grpc = load_stubs()


def _to_completion(msg) -> CompletionRequest:
    fields = {"prompt": msg.prompt, "echo": msg.echo, "ignore_eos": msg.ignore_eos, "stop": list(msg.stop) or None}
    for name in ("max_tokens", "temperature", "top_p", "top_k", "seed", "logprobs"):
        if msg.HasField(name):
            fields[name] = getattr(msg, name)
    if msg.model:
        fields["model"] = msg.model
    return CompletionRequest(**fields)


def _tokens(engine, ids: list[int], logprobs: list[float] | None) -> list:
    lps = logprobs or [0.0] * len(ids)
    return [pb2.Token(id=i, text=t, logprob=lp) for i, t, lp in zip(ids, engine.token_strings(ids), lps)]


class TextGeneration(pb2_grpc.TextGenerationServicer):
    def __init__(self, models: ModelSet) -> None:
        self.models = models

    async def _prepare(self, msg, context):
        try:
            req = _to_completion(msg)
            return self.models.get(req.model), req
        except ValidationError as e:
            err = e.errors()[0]
            param = ".".join(str(x) for x in err["loc"]) or "request"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{param}: {err['msg']}")
        except ModelNotFound as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))

    async def Generate(self, msg, context):
        engine, req = await self._prepare(msg, context)
        try:
            c = await collect(engine, replace(to_engine_request(req, req.prompts[0], 0), stream=False))
        except EngineError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        except EngineUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model unavailable: {e}")
        usage = pb2.Usage(prompt_tokens=len(c.prompt_ids), completion_tokens=len(c.token_ids),
                          total_tokens=len(c.prompt_ids) + len(c.token_ids))
        return pb2.GenerateResponse(
            id=f"cmpl-{uuid.uuid4().hex}", model=engine.name, text=(req.prompt if req.echo else "") + c.text,
            tokens=_tokens(engine, c.token_ids, c.logprobs) if req.logprobs is not None else [],
            finish_reason=FINISH_REASONS.get(c.finish_reason or "", ""), usage=usage,
        )

    async def GenerateStream(self, msg, context):
        engine, req = await self._prepare(msg, context)
        cid = f"cmpl-{uuid.uuid4().hex}"
        prompt_tokens = completion_tokens = 0
        try:
            async for chunk in stream(engine, to_engine_request(req, req.prompts[0], 0)):
                text = chunk.text
                if chunk.prompt is not None:
                    prompt_tokens = len(chunk.prompt.token_ids)
                    text = (req.prompt if req.echo else "") + text
                completion_tokens += len(chunk.token_ids)
                out = pb2.GenerateResponse(id=cid, model=engine.name, text=text,
                                           finish_reason=FINISH_REASONS.get(chunk.finish_reason or "", ""))
                if req.logprobs is not None:
                    out.tokens.extend(_tokens(engine, chunk.token_ids, chunk.logprobs))
                if chunk.finish_reason:
                    out.usage.CopyFrom(pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                                 total_tokens=prompt_tokens + completion_tokens))
                yield out
        except EngineError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        except EngineUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model unavailable: {e}")


async def start_server(models: ModelSet, port: int, host: str = "0.0.0.0") -> grpc.aio.Server:
    server = grpc.aio.server()
    pb2_grpc.add_TextGenerationServicer_to_server(TextGeneration(models), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    await server.start()
    return server
