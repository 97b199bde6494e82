"""`glotta.v1.TextGeneration` served beside REST, on the same engines, with `/v1/completions` semantics.

Requests are turned into the OpenAI protocol's pydantic model, so validation and defaults are the REST ones; the
choices and usage come from the same serving code as REST and SSE; errors take their gRPC code from the one error
table (glotta.server.errors), with the same messages.
"""

from __future__ import annotations

import grpc
from pydantic import ValidationError

from glotta.core.errors import GlottaError

from ..entrypoints.openai.protocol import CompletionRequest
from ..entrypoints.openai.serving import Choice, complete_choices, completion_id, stream_choices
from ..errors import from_validation, grpc_code, wire
from ..models import ModelSet
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


def _tokens(engine, choice: Choice) -> list:
    ids, lps = choice.token_ids, choice.logprobs or [0.0] * len(choice.token_ids)
    return [pb2.Token(id=i, text=t, logprob=lp) for i, t, lp in zip(ids, engine.token_strings(ids), lps)]


def _usage(u) -> "pb2.Usage":
    return pb2.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)


class TextGeneration(pb2_grpc.TextGenerationServicer):
    def __init__(self, models: ModelSet) -> None:
        self.models = models

    async def _prepare(self, msg, context):
        try:
            req = _to_completion(msg)
            return self.models.get(req.model), req
        except ValidationError as e:
            await _abort(context, from_validation(e))
        except GlottaError as e:
            await _abort(context, e)

    async def Generate(self, msg, context):
        engine, req = await self._prepare(msg, context)
        try:
            (choice,), use = await complete_choices(engine, req.model_copy(update={"stream": False}))
        except GlottaError as e:
            await _abort(context, e)
        return pb2.GenerateResponse(
            id=completion_id(), model=engine.name, text=choice.wire.text,
            tokens=_tokens(engine, choice) if req.logprobs is not None else [],
            finish_reason=choice.wire.finish_reason or "", usage=_usage(use),
        )

    async def GenerateStream(self, msg, context):
        engine, req = await self._prepare(msg, context)
        cid = completion_id()
        try:
            async for choice, use in await stream_choices(engine, req.model_copy(update={"stream": True})):
                out = pb2.GenerateResponse(id=cid, model=engine.name, text=choice.wire.text,
                                           finish_reason=choice.wire.finish_reason or "")
                if req.logprobs is not None:
                    out.tokens.extend(_tokens(engine, choice))
                if choice.wire.finish_reason:
                    out.usage.CopyFrom(_usage(use))
                yield out
        except GlottaError as e:
            await _abort(context, e)


async def _abort(context, e: GlottaError) -> None:
    await context.abort(grpc_code(e), wire("openai", e)[0])  # /v1/completions semantics, so OpenAI's field names


async def start_server(models: ModelSet, port: int, host: str = "0.0.0.0") -> grpc.aio.Server:
    server = grpc.aio.server()
    pb2_grpc.add_TextGenerationServicer_to_server(TextGeneration(models), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    await server.start()
    return server
