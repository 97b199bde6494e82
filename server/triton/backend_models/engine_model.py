"""Triton Python-backend model that serves a Glotta ONNX engine with the text interface (decoupled, streaming).

Each model folder's `1/model.py` re-exports `TritonPythonModel` from here. `execute` only hands requests to the
engine's event loop and returns: the engine batches them continuously and answers through each request's response
sender, so Triton's own scheduler never serializes generations. A request Triton marks cancelled (its client went
away) leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils

from glotta.core.errors import ErrorKind, GlottaError
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.server.engine.scheduling import SchedulerPolicy
from glotta.server.triton.contract import request_from_arrays, response_to_arrays, triton_message

CANCEL_CHECK_S = 0.02


def parse_request(request):
    """The engine request and the `exclude_input_in_output` flag, read through the one Triton contract."""
    def get(name: str):
        t = pb_utils.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy()

    return request_from_arrays(get)


def _response(wanted: set[str], text: str, ids, logprobs, tops, finish: str | None,
              prompt=None) -> "pb_utils.InferenceResponse":
    arrays = response_to_arrays(wanted, text, ids, logprobs, tops, finish, prompt)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, a) for n, a in arrays.items()])


def _error(message: str, invalid: bool = False) -> "pb_utils.InferenceResponse":
    """An error response (pb_utils' error codes exist only once the stub runs, not at import)."""
    codes = pb_utils.TritonError
    code = codes.INVALID_ARG if invalid else getattr(codes, "UNAVAILABLE", codes.INTERNAL)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_dir = Path(args["model_repository"])
        self.engine = OnnxEngine(
            model_dir,
            name=args["model_name"],
            precision=params.get("precision", "fp32"),
            threads=int(params.get("threads") or 0) or None,
            policy=SchedulerPolicy.from_params(params),
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="glotta-triton-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.engine.start(), self.loop).result()
        self._metrics = self._engine_metrics(args["model_name"])
        self._publisher = asyncio.run_coroutine_threadsafe(self._publish_metrics(), self.loop)
        self._pending: set = set()  # futures of the requests being served
        self._closing = False
        self._watch_stop_signal()

    def _watch_stop_signal(self) -> None:
        """Root cause of the stubs left behind after load: tritonserver unloads a decoupled model only once every
        request has sent its final response, and gives up after --exit-timeout-secs ("Exit timeout expired"),
        leaving the stub generating, orphaned. Glotta stops Triton by signalling its whole process group, so this
        stub gets SIGTERM too: it then ends every running generation at once (each request gets its final response,
        an "unavailable" error) and the unload completes within the timeout. The stub's own handler ignores the
        signal; a wake-up fd lets a thread see it without the main thread running Python."""
        try:
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)
            signal.signal(signal.SIGTERM, lambda *_: None)
            signal.set_wakeup_fd(write_fd)
        except ValueError:  # not the main thread: nothing to install
            return

        def wait() -> None:
            while os.read(read_fd, 1)[0] != signal.SIGTERM:  # the fd also hears other signals Python handles
                pass
            self._closing = True
            asyncio.run_coroutine_threadsafe(self.engine.stop(), self.loop)

        threading.Thread(target=wait, name="glotta-stop-signal", daemon=True).start()

    @staticmethod
    def _engine_metrics(model: str) -> dict:
        """Engine gauges on Triton's own metrics endpoint (:8002), next to its `nv_inference_*` figures."""
        labels = {"model": model}
        # admitted and queue_wait_seconds: the engine's queue (its fair admission), each prompt's wait summed
        kinds = {"waiting": "GAUGE", "running": "GAUGE", "cancelled": "COUNTER", "steps": "COUNTER",
                 "admitted": "COUNTER", "queue_wait_seconds": "COUNTER", "prefix_cache_bytes": "GAUGE"}
        out = {}
        for key, kind in kinds.items():
            family = pb_utils.MetricFamily(
                name=f"glotta_engine_{key}" + ("_total" if kind == "COUNTER" else ""),
                description=f"Glotta engine: {key}",
                kind=getattr(pb_utils.MetricFamily, kind),
            )
            out[key] = (family, family.Metric(labels=labels), kind)
        return out

    async def _publish_metrics(self) -> None:
        while True:
            stats = self.engine.stats()
            for key, (_, metric, kind) in self._metrics.items():
                if kind == "GAUGE":
                    metric.set(stats.get(key, 0))
                else:
                    metric.increment(stats.get(key, 0) - metric.value())
            await asyncio.sleep(0.25)

    def execute(self, requests):
        for request in requests:
            if self._closing:
                request.get_response_sender().send(_error("model is unloading"),
                                                   flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            future = asyncio.run_coroutine_threadsafe(self._serve(request), self.loop)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
        return None

    async def _serve(self, request) -> None:
        """Answer one request; whatever happens — an error, a cancellation at unload — it gets its final flag."""
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        finished = False
        generation = None
        try:
            req, exclude_input = parse_request(request)
            stream = req.stream
            wanted = set(request.requested_output_names())
            text = "" if exclude_input else req.prompt
            ids: list[int] = []
            lps: list[float] = []
            tops: list = []
            prompt = None
            next_check = 0.0
            generation = self.engine.generate(req)
            async for chunk in generation:
                now = time.monotonic()
                if now >= next_check:  # is_cancelled() is a round trip to the server: ask every 20 ms, not per token
                    next_check = now + CANCEL_CHECK_S
                    if request.is_cancelled():
                        finished = True
                        sender.send(flags=final)
                        return  # leaving the loop closes the stream: the engine drops the row
                if stream:
                    delta = (text if chunk.prompt is not None else "") + chunk.text
                    resp = _response(wanted, delta, chunk.token_ids, chunk.logprobs, chunk.top_logprobs,
                                     chunk.finish_reason, chunk.prompt)
                    finished = chunk.finish_reason is not None
                    sender.send(resp, flags=final if finished else 0)
                    continue
                text += chunk.text
                ids += chunk.token_ids
                lps += chunk.logprobs or []
                tops += chunk.top_logprobs or []
                prompt = chunk.prompt or prompt
                if chunk.finish_reason:
                    finished = True
                    sender.send(_response(wanted, text, ids, lps, tops, chunk.finish_reason, prompt), flags=final)
        except GlottaError as e:
            finished = True
            sender.send(_error(triton_message(e), invalid=e.kind is ErrorKind.INVALID), flags=final)
        except Exception as e:
            finished = True
            sender.send(_error(f"generation failed: {e}"), flags=final)
        finally:
            if generation is not None:  # closed now, not when collected: a cancelled row leaves the batch at once
                await generation.aclose()
            if not finished:  # cancelled at unload: never leave a client (or Triton's unload) waiting for the flag
                sender.send(_error("model is unloading"), flags=final)

    def finalize(self) -> None:
        """Bounded at every step: stop the engine (its rows end with an error), let the requests send their final
        flags, cancel what is left, stop the loop. A stub that hangs here outlives Triton's exit timeout."""
        self._closing = True
        try:
            asyncio.run_coroutine_threadsafe(self.engine.stop(), self.loop).result(timeout=10)
        except Exception:
            pass
        deadline = time.monotonic() + 5
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.02)
        for future in [*self._pending, self._publisher]:
            future.cancel()
        time.sleep(0.05)  # let the cancelled coroutines run their `finally`
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
