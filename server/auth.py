"""API keys: one rule for every door (REST, gRPC, the playground's calls), one place that reads where keys come from.

A request is let in when it carries `Authorization: Bearer KEY` (gRPC: the `authorization` metadata, same value) with
a key from `--api-key`, `--api-key-file` or `$GLOTTA_API_KEYS`. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, every key each time (the time taken does not tell which key nearly matched), and never
logged. A refusal does not say what was wrong.

Health and metrics stay open: orchestrators (Kubernetes probes, Prometheus) reach them without secrets, and they
reveal no text and cost nothing to answer. The playground page and the API docs are static: the page holds no
data and sends the key the user types with each call.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from glotta.core.errors import invalid

ENV_VAR = "GLOTTA_API_KEYS"
# paths served without a key: liveness/readiness, Prometheus, the static playground page and the API's schema/docs
OPEN_PREFIXES = ("/health/", "/metrics", "/docs", "/openapi.json", "/redoc", "/playground")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys (as digests). Empty: every request is let in."""

    def __init__(self, keys: set[str] | None = None) -> None:
        self._digests = [_digest(k) for k in sorted(keys or ())]

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def required(self) -> bool:
        return bool(self._digests)

    @classmethod
    def load(cls, flags: list[str] | None = None, file: str | Path | None = None,
             environ: dict[str, str] | None = None) -> "ApiKeys":
        """Keys from the flags, `$GLOTTA_API_KEYS` (comma-separated) and a file (one per line, `#` comments)."""
        env = os.environ if environ is None else environ
        keys = {k.strip() for k in flags or () if k.strip()}
        keys |= {k.strip() for k in env.get(ENV_VAR, "").split(",") if k.strip()}
        if file is not None:
            try:
                lines = Path(file).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise invalid(f"{file}: cannot read the API key file ({e})", "api_key_file") from None
            keys |= {ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}
        return cls(keys)

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header (or gRPC metadata) value carries an accepted key."""
        if not self._digests:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = _digest(token.strip())
        ok = False
        for key in self._digests:  # no early exit
            ok |= hmac.compare_digest(given, key)
        return ok

    @staticmethod
    def is_open(path: str) -> bool:
        """Paths that never need a key (see the module's docstring for why)."""
        return path == "/" or path.startswith(OPEN_PREFIXES)
