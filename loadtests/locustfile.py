"""Locust users for a Glotta gateway: Megatron `PUT /api`, `/v1/completions` (plain and streaming), template runs.

    locust -f loadtests/locustfile.py --headless -u 16 -r 16 --run-time 60s --host http://127.0.0.1:5000 StreamUser

`glotta loadtest` drives this file per concurrency level and writes the report. Environment knobs:
GLOTTA_MODELS (`fr=glotta-fr-tiny,es=glotta-es-tiny`: the model for each prompt language; unset, every prompt goes
to the server's default model),
GLOTTA_MAX_TOKENS (comma list of generation lengths, default 16,32,64), GLOTTA_MAX_REQUESTS (stop after this many
requests: every run ends by itself, on time or on count), GLOTTA_API_KEY (sent as `Authorization: Bearer`).

The streaming user reports time to first token (`TTFT`), every inter-token gap (`ITL`) and the whole stream (`E2E`)
as their own rows, read from the SSE stream as it arrives.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent
from locust import HttpUser, between, events, task

from glotta.core.sample_texts import sample_prompts

PROMPTS = sample_prompts()
MAX_TOKENS = [int(x) for x in os.environ.get("GLOTTA_MAX_TOKENS", "16,32,64").split(",")]
MAX_REQUESTS = int(os.environ.get("GLOTTA_MAX_REQUESTS", "100000"))
MODEL_BY_LANG = dict(p.split("=", 1) for p in os.environ.get("GLOTTA_MODELS", "").split(",") if "=" in p)
_state = {"sent": 0}


@events.test_start.add_listener
def _watch_budget(environment, **kw) -> None:
    """A hard request budget beside --run-time, so no run can go on without bound: a watcher greenlet ends the run
    once the budget is spent (quitting from inside a request hook would kill the hook's own greenlet)."""

    def watch() -> None:
        while _state["sent"] < MAX_REQUESTS:
            gevent.sleep(0.1)
        _state["stopped_by"] = "request budget"
        environment.runner.quit()

    gevent.spawn(watch)


_samples: dict[str, list[float]] = {"TTFT": [], "ITL": [], "E2E": []}


@events.quitting.add_listener
def _save_samples(environment, **kw) -> None:
    """Exact streaming samples for the report: Locust's CSV rounds times under 100 ms to whole milliseconds."""
    path = os.environ.get("GLOTTA_SAMPLES")
    if path:
        Path(path).write_text(json.dumps({**_samples, "stopped_by": _state.get("stopped_by", "run time")}))


@events.request.add_listener
def _count(request_type, response_time=0.0, **kw) -> None:
    if request_type in _samples:
        _samples[request_type].append(response_time)
    else:
        _state["sent"] += 1


def _prompt() -> tuple[str, str | None]:
    p = random.choice(PROMPTS)
    return p["prompt"], MODEL_BY_LANG.get(p["lang"])


class _GlottaUser(HttpUser):
    abstract = True
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        key = os.environ.get("GLOTTA_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    def _body(self, **fields) -> dict:
        return {k: v for k, v in fields.items() if v is not None}


class ApiUser(_GlottaUser):
    """Megatron-style clients: batches of 1-4 prompts, varied lengths, greedy or sampled."""

    @task
    def api(self) -> None:
        prompts, model = zip(*(_prompt() for _ in range(random.randint(1, 4))))
        body = self._body(prompts=list(prompts), tokens_to_generate=random.choice(MAX_TOKENS), model=model[0],
                          top_k=random.choice([1, 0]))
        with self.client.put("/api", json=body, name="PUT /api", catch_response=True) as r:
            if r.status_code != 200 or len(r.json().get("text", [])) != len(prompts):
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")


class CompletionsUser(_GlottaUser):
    @task
    def complete(self) -> None:
        prompt, model = _prompt()
        body = self._body(prompt=prompt, max_tokens=random.choice(MAX_TOKENS), temperature=0, model=model)
        with self.client.post("/v1/completions", json=body, name="/v1/completions", catch_response=True) as r:
            if r.status_code != 200 or "choices" not in r.json():
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")


class StreamUser(_GlottaUser):
    """SSE clients; TTFT and inter-token latency measured from the events as they arrive."""

    @task
    def stream(self) -> None:
        prompt, model = _prompt()
        body = self._body(prompt=prompt, max_tokens=random.choice(MAX_TOKENS), temperature=0, model=model,
                          stream=True, ignore_eos=True)
        fire = self.environment.events.request.fire
        start = time.perf_counter()
        last = None
        with self.client.post("/v1/completions", json=body, name="/v1/completions stream", stream=True,
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            done = False
            for line in r.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    done = True
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    r.failure(event["error"].get("message", "stream error"))
                    return
                now = time.perf_counter()
                if not event.get("choices") or not event["choices"][0]["text"]:
                    continue
                if last is None:
                    fire(request_type="TTFT", name="time to first token", response_time=(now - start) * 1e3,
                         response_length=0, exception=None, context={})
                else:
                    fire(request_type="ITL", name="inter-token latency", response_time=(now - last) * 1e3,
                         response_length=0, exception=None, context={})
                last = now
            if not done:
                r.failure("stream ended without [DONE]")
                return
            # Locust times a streamed response at its headers; the whole stream gets its own row
            fire(request_type="E2E", name="stream end to end", response_time=(time.perf_counter() - start) * 1e3,
                 response_length=0, exception=None, context={})


class TemplateUser(_GlottaUser):
    """Prompt-template runs: a scored classification and a generated translation."""

    @task(3)
    def sentiment(self) -> None:
        text = random.choice(["Un film magnifique.", "Quel ennui.", "Les acteurs sont formidables.", "Raté."])
        self._run("sentiment-fr", {"inputs": {"text": text}, "k": random.choice([0, 1, 3])})

    @task(1)
    def translation(self) -> None:
        self._run("translation-fr", {"inputs": {"source": random.choice(["cheese", "dog", "house"])}, "k": 3})

    def _run(self, name: str, body: dict) -> None:
        with self.client.post(f"/v1/templates/{name}/run", json=body, name=f"template {name}",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")

