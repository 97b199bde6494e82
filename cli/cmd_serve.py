"""`glotta serve`: the REST + gRPC gateway in front of the embedded ONNX Runtime engine or a Triton server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from glotta.core.errors import GlottaError

from .common import check_old_spellings, console, fail, refuse_old_spellings


def ports(base: int) -> tuple[int, int, int]:
    """Triton's HTTP, gRPC and metrics ports: the base and the next two."""
    return base, base + 1, base + 2


def _model_dir(spec: str, triton: bool) -> Path:
    """A model folder — or a Hugging Face folder of a registered family, converted once into the cache."""
    from glotta.core.errors import invalid
    from glotta.modeling.hf_folder import cached_hf_model, is_hf_folder
    from glotta.modeling.model_folder import resolve_model

    if not is_hf_folder(spec):
        return resolve_model(spec)
    if triton:
        raise invalid(f"{spec} is a Hugging Face folder: Triton serves from its repository, so write it there first "
                      f"(`glotta export onnx {spec} --output model_repository/{Path(spec).name}`)", "model")
    with console.status(f"converting {spec} (once; cached by content)"):
        return cached_hf_model(spec)


def _policy(a: argparse.Namespace):
    from glotta.server.engine.scheduling import SchedulerPolicy

    return SchedulerPolicy(max_batch=a.max_batch, max_rows_per_request=a.max_rows_per_request,
                           prefill_chunk=a.prefill_chunk, prefix_cache_mb=0 if a.no_prefix_cache else a.prefix_cache_mb,
                           speculate=a.speculate)


def _engines(a: argparse.Namespace, dirs: list[Path]) -> list:
    """One engine per model: embedded ONNX Runtime, or a Triton model of the same name."""
    if a.engine == "onnx":
        from glotta.server.engine.onnx_engine import load_engine

        derived = f" and deriving {a.precision} engines" if a.precision != "fp32" else ""
        with console.status("loading models" + derived):
            return [load_engine(d, precision=a.precision, threads=a.threads, policy=_policy(a)) for d in dirs]
    from glotta.server.triton.triton_engine import TritonEngine

    return [TritonEngine(a.triton_url, d) for d in dirs]


def _limits(a: argparse.Namespace):
    from glotta.server.limits import Limits

    return Limits(max_body_bytes=a.max_body_bytes, max_inflight_rows=a.max_inflight_rows,
                  queue_timeout_s=a.queue_timeout, request_timeout_s=a.request_timeout,
                  drain_timeout_s=a.drain_timeout, header_timeout_s=a.header_timeout, body_timeout_s=a.body_timeout,
                  max_connections=a.max_connections)


def _check_ports(a: argparse.Namespace) -> None:
    from glotta.core.errors import invalid
    from glotta.core.net import port_taken

    for port, flag, what in ((a.port, "--port", "HTTP"), (a.grpc_port, "--grpc-port", "gRPC")):
        if port and port_taken(a.host, port):
            raise invalid(f"{what} port {a.host}:{port} is already in use: stop the other server, or choose another "
                          f"port with {flag}" + (" (0 turns gRPC off)" if flag == "--grpc-port" else ""), flag)


def _serve(a: argparse.Namespace) -> int:
    from glotta.core.paths import model_repository
    from glotta.server.app import create_app
    from glotta.server.auth import ApiKeys
    from glotta.server.http_server import serve
    from glotta.server.models import DEFAULT_MODELS, ModelSet
    from glotta.server.templates.library import load_library
    from glotta.server.triton.launcher import TritonLaunchError, TritonServer

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    triton, died = None, []
    try:
        check_old_spellings(a)
        api_keys = ApiKeys.load(a.api_key, a.api_key_file)
        limits = _limits(a)
        _check_ports(a)
        templates = load_library(*(a.templates or []))
        dirs = [_model_dir(s, a.engine == "triton" or bool(a.triton_url)) for s in (a.model or DEFAULT_MODELS)]
        if a.triton_url:
            a.engine = "triton"
        elif a.engine == "triton":  # launch our own server on the repository, with just the served models
            if a.precision != "fp32":
                console.print("[yellow]note:[/] --precision is for the embedded engine; a Triton model's precision is "
                              "the `precision` parameter of its config.pbtxt")
            triton = TritonServer(model_repository(), [d.name for d in dirs], *ports(a.triton_base_port),
                                  host=a.triton_host)
            console.print(f"starting tritonserver; its log: {triton.log_path}")
            with console.status("waiting for tritonserver to be ready"):
                triton.start()
            # a Triton that dies takes this gateway down (exit 1): its supervisor restarts both
            triton.watch(lambda code: (died.append(code), os.kill(os.getpid(), signal.SIGTERM)))
            a.triton_url = [triton.grpc_url]
        engines = _engines(a, dirs)
        if a.chat_template:
            from glotta.modeling.chat_template import ChatTemplate
            from glotta.modeling.model_folder import ModelFolder

            for engine, d in zip(engines, dirs):
                engine.chat_template = ChatTemplate.from_file(a.chat_template, ModelFolder.open(d).special_token_texts())
        models = ModelSet(engines, default=a.default_model)
    except (GlottaError, OSError, ValueError, TritonLaunchError) as e:
        if triton is not None:
            triton.stop()
        return fail(e)
    via = f" via Triton at {', '.join(a.triton_url)}" if a.engine == "triton" else ""
    names = ", ".join(f"{e.name} ({e.precision})" for e in models.engines.values())
    grpc = f", gRPC on :{a.grpc_port}" if a.grpc_port else ""
    auth = f", {len(api_keys)} API key(s) required" if api_keys.required else ", no API key"
    console.print(f"serving {names}{via} on http://{a.host}:{a.port}{grpc} (default model: {models.default}){auth}")
    if not api_keys.required and a.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] listening on {a.host} without an API key: anyone who reaches this "
                      "machine can generate (set --api-key, or put an authenticating proxy in front)")
    try:
        # SIGTERM: stop accepting, let in-flight requests finish for up to --drain-timeout (then they end with 503),
        # the lifespan stops the engines; then Triton stops (and, should this process die another way, its watchdog).
        serve(create_app(models, a.grpc_port, a.host, templates, limits, api_keys), a.host, a.port, limits,
              a.log_level)
    finally:
        if triton is not None:
            triton.stop()
    if died:
        return fail(f"tritonserver exited with {died[0]} while serving (its log: {triton.log_path}); its stubs were "
                    "stopped, and this gateway stopped with it")
    return 0


def register(sub) -> None:
    from glotta.modeling.engine_graph import PRECISIONS as ENGINE_PRECISIONS
    from glotta.server.engine.scheduling import SchedulerPolicy
    from glotta.server.limits import Limits

    limits = Limits()  # the one place the limits' defaults are written
    policy = SchedulerPolicy()  # and the scheduler's
    s = sub.add_parser("serve", help="run the REST gateway (PUT /api, /v1/completions, /metrics)")
    s.add_argument("--model", action="append", help="model name in the repository, or a model folder (repeatable; "
                   "default: the shipped fr and es models)")
    s.add_argument("--default-model", help="model used when a request names none (default: the first)")
    s.add_argument("--host", default="127.0.0.1", help="address the REST and gRPC ports listen on (loopback: only this "
                   "machine; 0.0.0.0 for every interface, as the Docker image does)")
    s.add_argument("--port", type=int, default=5000, help="REST port")
    s.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp32", help="the embedded engine's: int8 serves "
                   "INT8 weights per output column with dynamically quantized activations (derived and cached at first "
                   "use)")
    refuse_old_spellings(s, ("--int8",))
    s.add_argument("--threads", type=int, default=int(os.environ.get("GLOTTA_THREADS", "0")) or None,
                   help="ONNX Runtime threads per model (default: all cores; $GLOTTA_THREADS)")
    s.add_argument("--max-batch", type=int, default=policy.max_batch, help="rows in the running batch")
    s.add_argument("--max-rows-per-request", type=int, default=policy.max_rows_per_request,
                   help="rows one request's prompts may hold (default 0: half of --max-batch), so that a giant "
                   "request never holds the whole batch")
    s.add_argument("--prefill-chunk", type=int, default=policy.prefill_chunk,
                   help="prompt tokens computed between two decoding steps (longer prompts are split)")
    s.add_argument("--prefix-cache-mb", type=int, default=policy.prefix_cache_mb,
                   help="memory for the KV cache of shared prompt prefixes, per model (LRU)")
    s.add_argument("--no-prefix-cache", action="store_true", help="compute every prompt in full")
    s.add_argument("--chat-template", metavar="FILE", help="a Jinja chat template for /v1/chat/completions, used "
                   "instead of the models' own (chat_template.jinja, tokenizer_config.json's `chat_template`)")
    s.add_argument("--speculate", type=int, default=policy.speculate, metavar="K",
                   help="n-gram speculation: a greedy request decoding alone drafts up to K tokens from its own text "
                   "and verifies them in one pass (same output, fewer passes where text repeats; 0: off)")
    s.add_argument("--engine", choices=["onnx", "triton"], default="onnx",
                   help="onnx: embedded ONNX Runtime; triton: start tritonserver on the repository and forward to it")
    s.add_argument("--triton-url", action="append", help="use external Triton replicas instead of starting one: gRPC "
                   "HOST:PORT (repeat for several; requests spread round-robin over the ready ones), or "
                   "dns:///NAME:PORT (a Kubernetes headless Service)")
    s.add_argument("--triton-base-port", type=int, default=8000, help="HTTP, gRPC and metrics ports of the "
                   "launched Triton are this and the next two")
    s.add_argument("--triton-host", default="127.0.0.1", help="address the launched Triton's ports bind to "
                   "(0.0.0.0 to open them to operators, as the Docker image does)")
    s.add_argument("--grpc-port", type=int, default=50051, help="glotta.v1 gRPC API port (0: off)")
    s.add_argument("--templates", action="append", help="directory of your own prompt templates (repeatable)")
    s.add_argument("--api-key", action="append", help="require `Authorization: Bearer KEY` (repeatable; also "
                   "$GLOTTA_API_KEYS, comma-separated)")
    s.add_argument("--api-key-file", help="file of API keys, one per line")
    s.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes, help="larger bodies get 413")
    s.add_argument("--max-inflight-rows", "--max-inflight", dest="max_inflight_rows", type=int,
                   default=limits.max_inflight_rows, help="prompts (engine rows) admitted per model, running or "
                   "queued; a request is admitted whole or gets 429 with Retry-After (400 if it alone holds more)")
    s.add_argument("--queue-timeout", type=float, default=limits.queue_timeout_s,
                   help="seconds until the first token, else 504")
    s.add_argument("--request-timeout", type=float, default=limits.request_timeout_s,
                   help="seconds for a whole generation, else 504")
    s.add_argument("--drain-timeout", type=float, default=limits.drain_timeout_s,
                   help="on SIGTERM, seconds to let requests finish; then they end with 503 and the reason")
    s.add_argument("--header-timeout", type=float, default=limits.header_timeout_s,
                   help="seconds a connection has to send a request's headers, else 408 and closed")
    s.add_argument("--body-timeout", type=float, default=limits.body_timeout_s,
                   help="seconds a request has to send its body once the headers arrived, else 408")
    s.add_argument("--max-connections", type=int, default=limits.max_connections,
                   help="open HTTP connections; one more gets 503 and is closed")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level")
    s.set_defaults(func=_serve)
