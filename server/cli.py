"""`glotta` command line: `serve` runs the gateway, `generate` calls one."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rich.console import Console

console = Console(stderr=True)


def _serve(a: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .engine.onnx_engine import load_engine
    from .models import DEFAULT_MODELS, ModelNotFound, ModelSet, resolve_model

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = a.model or list(DEFAULT_MODELS)
    try:
        dirs = [resolve_model(s) for s in specs]
        with console.status("loading models" + (" and deriving INT8 engines" if a.int8 else "")):
            engines = [load_engine(d, int8=a.int8, threads=a.threads, max_batch=a.max_batch) for d in dirs]
        models = ModelSet(engines, default=a.default_model)
    except (ModelNotFound, OSError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    names = ", ".join(f"{e.name} ({e.precision})" for e in engines)
    console.print(f"serving {names} on http://{a.host}:{a.port} (default model: {models.default})")
    uvicorn.run(create_app(models), host=a.host, port=a.port, log_level=a.log_level, access_log=a.access_log)
    return 0


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
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument("--access-log", action="store_true")
    s.set_defaults(func=_serve)

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
