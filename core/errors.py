"""The one error type. Every layer raises `GlottaError(kind, message, param)`; the gateway maps the kind to an HTTP
status and a body per API family, and to a gRPC code, from one table (glotta.server.error_responses); the CLI prints it.

`param` names the field to blame with the engine's neutral names (`prompt`, `max_new_tokens`, `stop`, `add_bos`);
each API family renames them to its own wire names.
"""

from __future__ import annotations

import re
from enum import Enum


class ErrorKind(str, Enum):
    INVALID = "invalid_request_error"  # the request is wrong: 400
    UNAUTHORIZED = "authentication_error"  # 401
    NOT_FOUND = "not_found_error"  # unknown model, template, route: 404
    METHOD = "method_not_allowed"  # 405
    SLOW_CLIENT = "request_timeout"  # the request did not arrive in time: 408
    TOO_LARGE = "request_too_large"  # body over the limit: 413
    MEDIA_TYPE = "unsupported_media_type"  # a body that is not JSON: 415
    OVERLOADED = "overloaded"  # admission limit reached: 429 with Retry-After
    UNAVAILABLE = "service_unavailable"  # backend down or shutting down: 503
    TIMEOUT = "timeout"  # queue or request timeout: 504
    INTERNAL = "internal_error"  # a bug: 500, message without details


class GlottaError(ValueError):
    """An error fit for a client or a user: what went wrong in plain words, and the field to blame.

    A ValueError, so that a pydantic validator can raise it and the gateway still finds its kind and field."""

    def __init__(self, kind: ErrorKind, message: str, param: str | None = None, retry_after: int | None = None,
                 code: str | None = None):
        """`code`: a machine-readable reason where OpenAI's API names one (`context_length_exceeded`, ...)."""
        super().__init__(message)
        self.kind, self.message, self.param, self.retry_after, self.code = kind, message, param, retry_after, code

    def __str__(self) -> str:
        return self.message


def invalid(message: str, param: str | None = None) -> GlottaError:
    return GlottaError(ErrorKind.INVALID, message, param)


def unavailable(message: str) -> GlottaError:
    return GlottaError(ErrorKind.UNAVAILABLE, f"model unavailable: {message}")


def not_found(message: str, param: str | None = None) -> GlottaError:
    return GlottaError(ErrorKind.NOT_FOUND, message, param)


def context_exceeded(message: str, param: str) -> GlottaError:
    return GlottaError(ErrorKind.INVALID, message, param, code="context_length_exceeded")


def rename_fields(text: str | None, names: dict[str, str]) -> str | None:
    """`text` with each whole-word field name of `names` replaced by its wire name (the engine's neutral names →
    the names of the API the client spoke)."""
    if not text or not names:
        return text
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: names[m.group(1)], text)
