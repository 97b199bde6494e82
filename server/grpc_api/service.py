"""`glotta.v1.TextGeneration` served beside REST, on the same engines, with `/v1/completions` and
`/v1/chat/completions` semantics.

Requests are turned into the OpenAI protocol's pydantic model, so validation and defaults are the REST ones; the
choices and usage come from the same serving code as REST and SSE; errors take their gRPC code from the one error
table (glotta.server.error_responses), with the same messages.
"""

from __future__ import annotations

import grpc
from pydantic import ValidationError

from glotta.core.errors import GlottaError

from ..auth import ApiKeys
from ..entrypoints.chat import serving as chat
from ..entrypoints.chat.protocol import ChatCompletionRequest
from ..entrypoints.openai.protocol import CompletionRequest
from ..entrypoints.openai.serving import complete_choices, completion_id, stream_choices
from ..error_responses import from_validation, grpc_code, wire
from ..limits import Limits
from ..models import ModelSet
from . import load_stubs

pb2, pb2_grpc = load_stubs()


def _sampling_fields(msg) -> dict:
    """The fields GenerateRequest and ChatRequest share, as the REST request's."""
    fields = {"ignore_eos": msg.ignore_eos, "stop": list(msg.stop) or None}
    for name in ("max_tokens", "temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty",
                 "repetition_penalty"):
        if msg.HasField(name):
            fields[name] = getattr(msg, name)
    if msg.logit_bias:
        fields["logit_bias"] = {str(k): v for k, v in msg.logit_bias.items()}
    if msg.model:
        fields["model"] = msg.model
    c = msg.constraint
    kind = c.WhichOneof("kind") if msg.HasField("constraint") else None
    if kind == "json_schema":
        fields["guided_json"] = c.json_schema
    elif kind == "json_object" and c.json_object:
        fields["response_format"] = {"type": "json_object"}
    elif kind == "regex":
        fields["guided_regex"] = c.regex
    elif kind == "choice":
        fields["guided_choice"] = list(c.choice.choices)
    elif kind == "grammar":
        fields["guided_grammar"] = c.grammar
    return fields


def _to_completion(msg) -> CompletionRequest:
    fields = {**_sampling_fields(msg), "prompt": list(msg.prompt_ids) or msg.prompt, "echo": msg.echo}
    if msg.HasField("logprobs"):
        fields["logprobs"] = msg.logprobs
    return CompletionRequest(**fields)


def _to_chat(msg) -> ChatCompletionRequest:
    fields = {**_sampling_fields(msg), "messages": [{"role": m.role, "content": m.content, **({"name": m.name}
                                                                                             if m.name else {})}
                                                    for m in msg.messages]}
    if msg.HasField("logprobs"):
        fields["logprobs"], fields["top_logprobs"] = True, msg.logprobs
    return ChatCompletionRequest(**fields)


def _tokens(engine, ids: list[int], lps: list[float] | None, tops: list | None) -> list:
    lps = lps or [0.0] * len(ids)
    tops = tops or [{}] * len(ids)
    return [pb2.Token(id=i, text=t, logprob=lp, top_logprobs=[pb2.Alternative(text=a, logprob=v)
                                                                for a, v in top.items()])
            for i, t, lp, top in zip(ids, engine.token_strings(ids), lps, tops)]


def _usage(u) -> "pb2.Usage":
    return pb2.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, total_tokens=u.total_tokens)


class TextGeneration(pb2_grpc.TextGenerationServicer):
    def __init__(self, models: ModelSet) -> None:
        self.models = models

    async def _prepare(self, msg, context, convert=_to_completion):
        try:
            req = convert(msg)
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
            tokens=_tokens(engine, choice.token_ids, choice.logprobs, choice.top_logprobs)
            if req.logprobs is not None else [],
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
                    out.tokens.extend(_tokens(engine, choice.token_ids, choice.logprobs, choice.top_logprobs))
                if choice.wire.finish_reason:
                    out.usage.CopyFrom(_usage(use))
                yield out
        except GlottaError as e:
            await _abort(context, e)

    async def Chat(self, msg, context):
        engine, req = await self._prepare(msg, context, _to_chat)
        try:
            response, (result,) = await chat.complete(engine, req.model_copy(update={"stream": False}))
        except GlottaError as e:
            await _abort(context, e)
        (choice,) = response.choices
        return pb2.GenerateResponse(
            id=response.id, model=engine.name, text=choice.message.content or "",
            tokens=_tokens(engine, result.token_ids, result.logprobs, result.top_logprobs) if req.logprobs else [],
            finish_reason=choice.finish_reason or "", usage=_usage(response.usage),
        )

    async def ChatStream(self, msg, context):
        engine, req = await self._prepare(msg, context, _to_chat)
        cid = chat.chat_id()
        try:
            async for delta, use in await chat.stream_deltas(engine, req.model_copy(update={"stream": True})):
                out = pb2.GenerateResponse(id=cid, model=engine.name, text=delta.wire.delta.content or "",
                                           finish_reason=delta.wire.finish_reason or "")
                if req.logprobs:
                    tops = None
                    if delta.wire.logprobs is not None:
                        tops = [{a.token: a.logprob for a in t.top_logprobs} for t in delta.wire.logprobs.content]
                    out.tokens.extend(_tokens(engine, delta.token_ids, delta.logprobs, tops))
                if delta.wire.finish_reason:
                    out.usage.CopyFrom(_usage(use))
                yield out
        except GlottaError as e:
            await _abort(context, e)


async def _abort(context, e: GlottaError) -> None:
    await context.abort(grpc_code(e), wire("openai", e)[0])  # /v1/completions semantics, so OpenAI's field names


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """The REST rule on gRPC: `authorization: Bearer KEY` metadata, else UNAUTHENTICATED (same text as REST's 401)."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        if handler is None or self.keys.allows(metadata.get("authorization")):
            return handler

        async def deny(_request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Unauthorized")

        async def deny_stream(_request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Unauthorized")
            yield  # pragma: no cover - makes this an async generator, as a server-streaming handler must be

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny_stream, handler.request_deserializer,
                                                        handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)


async def start_server(models: ModelSet, port: int, host: str, keys: ApiKeys, limits: Limits) -> grpc.aio.Server:
    """The gRPC service on `host:port` (the REST host: loopback unless told otherwise), behind the same keys; a message
    is bounded like a REST body, and calls at once by `max_grpc_rpcs` (beyond: RESOURCE_EXHAUSTED)."""
    options = [("grpc.max_receive_message_length", limits.max_body_bytes),
               ("grpc.max_concurrent_streams", 100),
               ("grpc.so_reuseport", 0)]  # gRPC's default would let a second gateway share the port silently
    server = grpc.aio.server(interceptors=[ApiKeyInterceptor(keys)] if keys.required else [], options=options,
                             maximum_concurrent_rpcs=limits.max_grpc_rpcs)
    pb2_grpc.add_TextGenerationServicer_to_server(TextGeneration(models), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {address}: is another server using it? (choose another with "
                      f"--grpc-port, or 0 to turn gRPC off)")
    await server.start()
    return server
