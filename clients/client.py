"""Small sync and async Python clients for a Glotta gateway (`PUT /api` and the OpenAI `/v1` routes)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx

DEFAULT_URL = "http://localhost:5000"


def gateway_url(spec: str) -> str:
    """A gateway's base URL from what people type: `host:port`, `host`, `:port` or a full `http(s)://` URL."""
    text = spec.strip()
    if text.startswith(":"):
        text = "localhost" + text
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 — raises on a port that is not a number
    except ValueError as e:
        raise ValueError(f"{spec!r} is not a gateway address (host:port or http://host:port): {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{spec!r} is not a gateway address (host:port or http://host:port)")
    return text.rstrip("/")


class GlottaError(RuntimeError):
    """The gateway answered with an error; `status` and `param` say which and where."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.param = status, message, param


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        body = r.json()
    except ValueError:
        raise GlottaError(r.status_code, r.text) from None
    err = body.get("error", body) if isinstance(body, dict) else {"message": str(body)}
    raise GlottaError(r.status_code, err.get("message", str(body)), err.get("param"))


def _api_body(prompts: str | list[str], tokens_to_generate: int, model: str | None, **params: Any) -> dict:
    body = {"prompts": [prompts] if isinstance(prompts, str) else prompts, "tokens_to_generate": tokens_to_generate}
    if model:
        body["model"] = model
    return body | {k: v for k, v in params.items() if v is not None}


def _completion_body(prompt: str | list[str], max_tokens: int, model: str | None, stream: bool, **params: Any) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": stream}
    if model:
        body["model"] = model
    return body | {k: v for k, v in params.items() if v is not None}


def _sse_data(line: str) -> dict | None:
    if not line.startswith("data: "):
        return None
    data = line[len("data: ") :]
    if data == "[DONE]":
        return None
    event = json.loads(data)
    if "error" in event:
        raise GlottaError(200, event["error"].get("message", "stream error"), event["error"].get("param"))
    return event


class GlottaClient:
    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 120.0) -> None:
        self._http = httpx.Client(base_url=gateway_url(base_url), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GlottaClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def api(self, prompts: str | list[str], tokens_to_generate: int = 64, model: str | None = None, **params) -> dict:
        """Megatron's `PUT /api`; returns `{"text", "segments", "logprobs"}`."""
        r = self._http.put("/api", json=_api_body(prompts, tokens_to_generate, model, **params))
        _raise_for(r)
        return r.json()

    def complete(self, prompt: str | list[str], max_tokens: int = 16, model: str | None = None, **params) -> dict:
        r = self._http.post("/v1/completions", json=_completion_body(prompt, max_tokens, model, False, **params))
        _raise_for(r)
        return r.json()

    def stream(self, prompt: str, max_tokens: int = 16, model: str | None = None, **params) -> Iterator[str]:
        """Text deltas as the server generates them."""
        body = _completion_body(prompt, max_tokens, model, True, **params)
        with self._http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code >= 400:
                r.read()
                _raise_for(r)
            for line in r.iter_lines():
                event = _sse_data(line)
                if event and event["choices"]:
                    yield event["choices"][0]["text"]

    def models(self) -> list[str]:
        r = self._http.get("/v1/models")
        _raise_for(r)
        return [m["id"] for m in r.json()["data"]]

    def templates(self) -> list[dict]:
        r = self._http.get("/v1/templates")
        _raise_for(r)
        return r.json()["data"]

    def template(self, name: str) -> dict:
        r = self._http.get(f"/v1/templates/{name}")
        _raise_for(r)
        return r.json()

    def run_template(self, name: str, inputs: dict[str, str], k: int = 0, **params) -> dict:
        """Render and answer a prompt template; returns prompt, answer, label and label scores."""
        body = {"inputs": inputs, "k": k} | {key: v for key, v in params.items() if v is not None}
        r = self._http.post(f"/v1/templates/{name}/run", json=body)
        _raise_for(r)
        return r.json()


class AsyncGlottaClient:
    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 120.0) -> None:
        self._http = httpx.AsyncClient(base_url=gateway_url(base_url), timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncGlottaClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def api(self, prompts: str | list[str], tokens_to_generate: int = 64, model: str | None = None, **params):
        r = await self._http.put("/api", json=_api_body(prompts, tokens_to_generate, model, **params))
        _raise_for(r)
        return r.json()

    async def complete(self, prompt: str | list[str], max_tokens: int = 16, model: str | None = None, **params):
        r = await self._http.post("/v1/completions", json=_completion_body(prompt, max_tokens, model, False, **params))
        _raise_for(r)
        return r.json()

    async def stream(self, prompt: str, max_tokens: int = 16, model: str | None = None, **params) -> AsyncIterator[str]:
        body = _completion_body(prompt, max_tokens, model, True, **params)
        async with self._http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code >= 400:
                await r.aread()
                _raise_for(r)
            async for line in r.aiter_lines():
                event = _sse_data(line)
                if event and event["choices"]:
                    yield event["choices"][0]["text"]

    async def template(self, name: str) -> dict:
        r = await self._http.get(f"/v1/templates/{name}")
        _raise_for(r)
        return r.json()

    async def run_template(self, name: str, inputs: dict[str, str], k: int = 0, **params) -> dict:
        body = {"inputs": inputs, "k": k} | {key: v for key, v in params.items() if v is not None}
        r = await self._http.post(f"/v1/templates/{name}/run", json=body)
        _raise_for(r)
        return r.json()
