"""The one error type. Every layer raises `GlottaError(kind, message, param)`; the gateway maps the kind to an HTTP
status and a body per API family, and to a gRPC code, from one table (glotta.server.errors); the CLI prints it.

`param` names the field to blame with the engine's neutral names (`prompt`, `max_new_tokens`, `stop`, `add_bos`);
each API family renames them to its own wire names.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    INVALID = "invalid_request_error"  # the request is wrong: 400
    UNAUTHORIZED = "authentication_error"  # 401
    NOT_FOUND = "not_found_error"  # unknown model, template, route: 404
    METHOD = "method_not_allowed"  # 405
    TOO_LARGE = "request_too_large"  # body over the limit: 413
    OVERLOADED = "overloaded"  # admission limit reached: 429 with Retry-After
    UNAVAILABLE = "service_unavailable"  # backend down or shutting down: 503
    TIMEOUT = "timeout"  # queue or request timeout: 504
    INTERNAL = "internal_error"  # a bug: 500, message without details


class GlottaError(ValueError):
    """An error fit for a client or a user: what went wrong in plain words, and the field to blame.

    A ValueError, so that a pydantic validator can raise it and the gateway still finds its kind and field."""

    def __init__(self, kind: ErrorKind, message: str, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.param, self.retry_after = kind, message, param, retry_after

    def __str__(self) -> str:
        return self.message


def invalid(message: str, param: str | None = None) -> GlottaError:
    return GlottaError(ErrorKind.INVALID, message, param)


def unavailable(message: str) -> GlottaError:
    return GlottaError(ErrorKind.UNAVAILABLE, f"model unavailable: {message}")


def not_found(message: str, param: str | None = None) -> GlottaError:
    return GlottaError(ErrorKind.NOT_FOUND, message, param)
