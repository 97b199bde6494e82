"""`glotta` command line: `serve` runs the gateway, `generate` calls one."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


def _build_engines(a: argparse.Namespace, dirs: list) -> list:
    """One engine per model: embedded ONNX Runtime, or a Triton model of the same name."""
    if a.engine == "onnx":
        from .engine.onnx_engine import load_engine

        with console.status("loading models" + (" and deriving INT8 engines" if a.int8 else "")):
            return [load_engine(d, int8=a.int8, threads=a.threads, max_batch=a.max_batch) for d in dirs]
    from .engine.triton_engine import TritonEngine

    return [TritonEngine(a.triton_url, d) for d in dirs]


def _serve(a: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .models import DEFAULT_MODELS, ModelNotFound, ModelSet, model_repository, resolve_model
    from .templates.library import TemplateError, load_library
    from .triton.launcher import TritonLaunchError, TritonServer

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = a.model or list(DEFAULT_MODELS)
    triton = None
    from .limits import Limits

    try:
        api_keys = _api_keys(a)
        limits = Limits(max_body_bytes=a.max_body_bytes, max_inflight=a.max_inflight,
                        queue_timeout_s=a.queue_timeout, request_timeout_s=a.request_timeout)
        templates = load_library(*(a.templates or []))
        dirs = [resolve_model(s) for s in specs]
        if a.triton_url:
            a.engine = "triton"
        elif a.engine == "triton":  # launch our own server on the repository, with just the served models
            if a.int8:
                console.print("[yellow]note:[/] --int8 is for the embedded engine; a Triton model's precision is "
                              "the `precision` parameter of its config.pbtxt")
            triton = TritonServer(model_repository(), [d.name for d in dirs], *_ports(a.triton_base_port))
            with console.status(f"starting tritonserver (log: {triton.log_path})"):
                triton.start()
            a.triton_url = triton.grpc_url
        models = ModelSet(_build_engines(a, dirs), default=a.default_model)
    except (ModelNotFound, TemplateError, TritonLaunchError, OSError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        if triton is not None:
            triton.stop()
        return 2
    via = f" via Triton at {a.triton_url}" if a.engine == "triton" else ""
    names = ", ".join(f"{e.name} ({e.precision})" for e in models.engines.values())
    grpc = f", gRPC on :{a.grpc_port}" if a.grpc_port else ""
    auth = f", {len(api_keys)} API key(s) required on /api and /v1" if api_keys else ""
    console.print(f"serving {names}{via} on http://{a.host}:{a.port}{grpc} (default model: {models.default}){auth}")
    try:
        # SIGTERM: uvicorn stops accepting, lets in-flight requests finish for up to --drain-timeout, then the
        # lifespan stops the engines.
        uvicorn.run(create_app(models, a.grpc_port, a.host, templates, limits, api_keys), host=a.host, port=a.port,
                    log_level=a.log_level, access_log=False, timeout_graceful_shutdown=a.drain_timeout)
    finally:
        if triton is not None:
            triton.stop()
    return 0


def _api_keys(a: argparse.Namespace) -> set[str]:
    """Keys from --api-key, $GLOTTA_API_KEYS (comma-separated) and --api-key-file (one per line, # comments)."""
    keys = set(a.api_key or [])
    keys |= {k.strip() for k in os.environ.get("GLOTTA_API_KEYS", "").split(",") if k.strip()}
    if a.api_key_file:
        for line in Path(a.api_key_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                keys.add(line.strip())
    return keys


def _ports(base: int) -> tuple[int, int, int]:
    return base, base + 1, base + 2


def _triton(a: argparse.Namespace) -> int:
    from .models import model_repository, resolve_model
    from .triton.launcher import TritonLaunchError, TritonServer, cpu_models, detached_state, stop_detached

    repo = model_repository()
    if a.action == "start":
        if detached_state():
            console.print("[red]error:[/] a tritonserver started by glotta is already running (`glotta triton stop`)")
            return 2
        try:
            names = [resolve_model(m).name for m in a.model] if a.model else cpu_models(repo)
            server = TritonServer(repo, names, *_ports(a.base_port)).start(detach=True)
        except (TritonLaunchError, LookupError) as e:
            console.print(f"[red]error:[/] {e}")
            return 2
        console.print(f"tritonserver pid {server.proc.pid}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
                      f"models {names}; log {server.log_path}")
        return 0
    if a.action == "stop":
        console.print("stopped" if stop_detached() else "no tritonserver started by glotta is running")
        return 0
    state = detached_state()
    if state is None:
        console.print("no tritonserver started by glotta is running")
        return 1
    server = TritonServer(state["repository"], state["models"], state["http_port"], state["grpc_port"],
                          state["metrics_port"], state["workdir"])
    ok = server.ready()
    console.print(f"pid {state['pid']}: {'ready' if ok else 'NOT ready'} — HTTP {server.http_url}, "
                  f"gRPC {server.grpc_url}, models {state['models']}")
    return 0 if ok else 1


def _generate(a: argparse.Namespace) -> int:
    import httpx
    from glotta.clients.client import GlottaClient, GlottaError

    try:
        with GlottaClient(a.url) as client:
            params = {"temperature": a.temperature, "top_k": a.top_k, "seed": a.seed}
            if a.stream:
                for delta in client.stream(a.prompt, a.max_tokens, a.model, **params):
                    sys.stdout.write(delta)
                    sys.stdout.flush()
                sys.stdout.write("\n")
            else:
                out = client.complete(a.prompt, a.max_tokens, a.model, echo=True, **params)
                print(out["choices"][0]["text"])
    except GlottaError as e:
        console.print(f"[red]error:[/] {e}")
        return 1
    except (httpx.TransportError, OSError) as e:  # connection refused and friends
        console.print(f"[red]error:[/] cannot reach {a.url}: {e}")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glotta", description="Localized GPTs from raw text to production serving.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the REST gateway (PUT /api, /v1/completions, /metrics)")
    s.add_argument("--model", action="append", help="model name in the repository, or a model folder (repeatable)")
    s.add_argument("--default-model", help="model used when a request names none (default: the first)")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--int8", action="store_true", help="serve INT8 engines (derived and cached at first use)")
    s.add_argument("--threads", type=int, default=int(os.environ.get("GLOTTA_THREADS", "0")) or None)
    s.add_argument("--max-batch", type=int, default=64, help="rows in the running batch")
    s.add_argument("--engine", choices=["onnx", "triton"], default="onnx",
                   help="onnx: embedded ONNX Runtime; triton: start tritonserver on the repository and forward to it")
    s.add_argument("--triton-url", help="use an external Triton (gRPC HOST:PORT) instead of starting one")
    s.add_argument("--triton-base-port", type=int, default=8000, help="HTTP, gRPC and metrics ports of the "
                   "launched Triton are this and the next two")
    s.add_argument("--grpc-port", type=int, default=50051, help="glotta.v1 gRPC API port (0: off)")
    s.add_argument("--templates", action="append", help="directory of your own prompt templates (repeatable)")
    s.add_argument("--api-key", action="append", help="require `Authorization: Bearer KEY` (repeatable; also "
                   "$GLOTTA_API_KEYS, comma-separated)")
    s.add_argument("--api-key-file", help="file of API keys, one per line")
    s.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024, help="larger bodies get 413")
    s.add_argument("--max-inflight", type=int, default=256, help="per model; beyond it 429 with Retry-After")
    s.add_argument("--queue-timeout", type=float, default=60.0, help="seconds until the first token, else 504")
    s.add_argument("--request-timeout", type=float, default=600.0, help="seconds for a whole generation, else 504")
    s.add_argument("--drain-timeout", type=float, default=30.0, help="on SIGTERM, seconds to let requests finish")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=_serve)

    t = sub.add_parser("triton", help="run tritonserver on the model repository, for operators")
    t.add_argument("action", choices=["start", "status", "stop"])
    t.add_argument("--model", action="append", help="model to load (default: every model that runs on CPU)")
    t.add_argument("--base-port", type=int, default=8000, help="HTTP port; gRPC and metrics take the next two")
    t.set_defaults(func=_triton)

    from glotta.loadtests.cli import add_parser as add_loadtest_parser

    from .templates.cli import add_parser as add_prompt_parser

    add_prompt_parser(sub)
    add_loadtest_parser(sub)
    from glotta.export.cli import add_parsers as add_export_parsers
    from glotta.training.cli import add_parsers as add_training_parsers

    add_training_parsers(sub)
    add_export_parsers(sub)

    g = sub.add_parser("generate", help="continue a prompt through a running gateway")
    g.add_argument("prompt")
    g.add_argument("--url", default="http://localhost:5000")
    g.add_argument("--model")
    g.add_argument("--max-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--stream", action="store_true")
    g.set_defaults(func=_generate)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
