"""Prometheus metrics, named after vLLM/TGI conventions (TTFT, inter-token latency, e2e, queue depth)."""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("glotta_requests_total", "HTTP generation requests", ["endpoint", "status"])
TTFT = Histogram("glotta_time_to_first_token_seconds", "Time to first token", ["model"], buckets=_LATENCY_BUCKETS)
ITL = Histogram("glotta_inter_token_latency_seconds", "Time between tokens", ["model"], buckets=_LATENCY_BUCKETS)
E2E = Histogram("glotta_e2e_request_latency_seconds", "Generation latency", ["model"], buckets=_LATENCY_BUCKETS)
PROMPT_TOKENS = Counter("glotta_prompt_tokens_total", "Prompt tokens processed", ["model"])
PROMPT_TOKENS_CACHED = Counter("glotta_prompt_tokens_cached_total", "Prompt tokens taken from the prefix cache",
                               ["model"])
QUEUE_WAIT = Histogram("glotta_queue_wait_seconds", "Time each prompt waited before joining the batch", ["model"],
                       buckets=_LATENCY_BUCKETS)
GENERATION_TOKENS = Counter("glotta_generation_tokens_total", "Tokens generated", ["model"])
BATCH_SIZE = Histogram(
    "glotta_decode_batch_size", "Rows in each decoding step", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)


class _EngineCollector:
    """Reads live queue depth and batch size from the engines at scrape time."""

    def __init__(self) -> None:
        self.engines: weakref.WeakSet = weakref.WeakSet()

    def collect(self):
        waiting = GaugeMetricFamily("glotta_queue_depth", "Requests waiting to join the batch", labels=["model"])
        running = GaugeMetricFamily("glotta_running_requests", "Requests in the running batch", labels=["model"])
        inflight = GaugeMetricFamily("glotta_inflight_rows", "Prompts (engine rows) admitted and not finished: what "
                                     "--max-inflight-rows bounds", labels=["model"])
        cancelled = CounterMetricFamily(
            "glotta_cancelled_requests", "Requests dropped because their client went away", labels=["model"]
        )
        for e in list(self.engines):
            s = e.stats()
            waiting.add_metric([e.name], s.get("waiting", 0))
            running.add_metric([e.name], s.get("running", 0))
            cancelled.add_metric([e.name], s.get("cancelled", 0))
            inflight.add_metric([e.name], s.get("inflight", 0))
        yield waiting
        yield running
        yield inflight
        yield cancelled


_collector = _EngineCollector()
REGISTRY.register(_collector)


def track(engine) -> None:
    _collector.engines.add(engine)
