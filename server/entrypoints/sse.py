"""OpenAI's Server-Sent Events framing, for completions and chat alike: one `data:` event per chunk object, the usage
chunk when the client asked for it, errors after the headers went out as an `error` event, and `data: [DONE]`."""

from __future__ import annotations

import json
import logging
import time
from typing import AsyncIterator

from glotta.core.errors import ErrorKind, GlottaError

from ..error_responses import body as error_body

log = logging.getLogger("glotta.server")


def sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def sse_events(head: dict, choices: AsyncIterator, include_usage: bool) -> AsyncIterator[bytes]:
    """`choices` yields (choice as a dict, usage so far); each event is `head` (id, object, model) plus the choice."""
    head = {**head, "created": int(time.time())}
    counts = None
    try:
        async for choice, counts in choices:
            yield sse(head | {"choices": [choice]})
        if counts is not None and include_usage:
            yield sse(head | {"choices": [], "usage": counts.model_dump()})
    except GlottaError as e:
        yield sse(error_body("openai", e))
    except Exception as e:
        log.exception("stream failed")
        yield sse(error_body("openai", GlottaError(ErrorKind.INTERNAL, f"generation failed: {type(e).__name__}")))
    yield b"data: [DONE]\n\n"
