"""`glotta generate`: continue a prompt through a running gateway."""

from __future__ import annotations

import argparse
import sys

from .common import fail


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
        fail(e)
        return 1
    except (httpx.TransportError, OSError) as e:  # connection refused and friends
        fail(f"cannot reach {a.url}: {e}")
        return 1
    return 0


def register(sub) -> None:
    g = sub.add_parser("generate", help="continue a prompt through a running gateway")
    g.add_argument("prompt", help="the text to continue")
    g.add_argument("--url", default="http://localhost:5000", help="the gateway")
    g.add_argument("--model", help="served model (default: the gateway's)")
    g.add_argument("--max-tokens", type=int, default=50, help="new tokens")
    g.add_argument("--temperature", type=float, help="0 = greedy")
    g.add_argument("--top-k", type=int, help="1 = greedy")
    g.add_argument("--seed", type=int, help="reproducible sampling")
    g.add_argument("--stream", action="store_true", help="print the text as it is generated")
    g.set_defaults(func=_generate)
