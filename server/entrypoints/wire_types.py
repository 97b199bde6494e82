"""What the request models share about JSON itself.

- Types as JSON Schema (and OpenAI's API) read them (`check_json_types`): an integer field takes `5` and `5.0` but
  not `"5"` or `true`, a number field takes `5` and `0.5` but not `"0.5"`, a boolean takes only `true`/`false` —
  never pydantic's lax coercions, which would accept what the schema says is wrong.
- Text must be text: JSON can carry a lone surrogate (`"\\ud800"`), which no tokenizer encodes and no UTF-8 response
  can echo. Every request model checks its whole body, so any string field — model names, prompts, stop strings,
  template inputs, their keys — is refused with a 400 naming it.
"""

from __future__ import annotations

import re
import types
import typing
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

from glotta.core.errors import invalid

_JSON_TYPES = {bool: ("boolean", (bool,)), int: ("integer", (int, float)), float: ("number", (int, float))}
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # in JSON text, a surrogate can only arrive as a \uD8xx..\uDFxx escape
# False when the request body holds no surrogate escape at all (the middleware looks at the raw bytes, in C): then the
# parsed data cannot hold a lone surrogate, and nothing is walked. Callers without a raw body (gRPC) walk.
may_hold_surrogates: ContextVar[bool] = ContextVar("glotta_may_hold_surrogates", default=True)


def body_may_hold_surrogates(body: bytes) -> bool:
    return _ESCAPE.search(body) is not None


def _json_type(annotation: Any) -> tuple[str, tuple, bool] | None:
    """(JSON type, Python types it arrives as, whether it is a list of them) of a field's annotation, if scalar."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        # `int | None`: the integer's rule; a union of several shapes (a prompt of text or of token ids) is left to
        # its own validator
        found = {_json_type(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return found.pop() if len(found) == 1 else None
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        found = _json_type(item)
        return (found[0], found[1], True) if found is not None and not found[2] else None
    if annotation in _JSON_TYPES:
        return (*_JSON_TYPES[annotation], False)
    return None


def check_json_types(model: type[BaseModel], data: Any) -> None:
    """Refuse, naming the field, a value whose JSON type is not the field's (an integral `5.0` is an integer to JSON
    Schema and stays accepted; pydantic then refuses `5.5` for an integer)."""
    if not isinstance(data, dict):
        return
    for name, field in model.model_fields.items():
        if data.get(name) is None:
            continue
        found = _json_type(field.annotation)
        if found is None:
            continue
        kind, accepted, is_list = found
        values = data[name] if is_list and isinstance(data[name], list) else [data[name]]
        longest = min((m.max_length for m in field.metadata if getattr(m, "max_length", None)), default=None)
        if longest is not None and len(values) > longest:
            continue  # pydantic refuses its length before anything else: no need to look at 200,000 items
        for v in values:
            if not isinstance(v, accepted) or (kind != "boolean" and isinstance(v, bool)):
                raise invalid(f"{name}: Input should be a valid {kind}" + (" list" if is_list else "")
                              + f", not {type(v).__name__} {str(v)[:40]!r}", name)


def _find(obj: Any, path: tuple) -> tuple | None:
    if isinstance(obj, str):
        return path if _SURROGATE.search(obj) else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = k if isinstance(k, str) else str(k)
            if _SURROGATE.search(key):
                return (*path, "<key>")
            found = _find(v, (*path, key))
            if found is not None:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _find(v, (*path, i))
            if found is not None:
                return found
    return None


def reject_lone_surrogates(data: Any) -> None:
    """A 400 naming the first field that holds a lone surrogate (`param`: its dotted name, list indices left out)."""
    path = _find(data, ())
    if path:
        where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
        param = ".".join(p for p in path if isinstance(p, str))
        raise invalid(f"{where} is not valid Unicode text (lone surrogate)", param)


def check_wire(model: type[BaseModel], data: Any) -> Any:
    """Both checks, as a request model's `mode="before"` validator runs them."""
    if may_hold_surrogates.get():
        reject_lone_surrogates(data)
    check_json_types(model, data)
    return data
