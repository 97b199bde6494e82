"""`glotta generate`: continue a prompt through a running gateway."""

from __future__ import annotations

import argparse
import sys

from .common import fail, url_option


def _generate(a: argparse.Namespace) -> int:
    import httpx

    from glotta.clients.client import GlottaClient, GlottaError

    try:
        with GlottaClient(a.url) as client:
            params = {"temperature": a.temperature, "top_k": a.top_k, "top_p": a.top_p,
                      "repetition_penalty": a.repetition_penalty, "seed": a.seed}
            if a.stream:  # the same text as without --stream: the prompt, then the continuation as it comes
                sys.stdout.write(a.prompt)
                sys.stdout.flush()
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
    g = sub.add_parser("generate", help="continue a prompt through a running gateway",
                       description="Prints the prompt followed by its continuation (as Megatron's /api answers), "
                                   "with or without --stream.")
    g.add_argument("prompt", help="the text to continue")
    url_option(g)
    g.add_argument("--model", help="served model (default: the gateway's)")
    g.add_argument("--max-tokens", type=int, default=50, help="new tokens")
    # The defaults are the settings under which the shipped demo model reads best, by measure (fewest made-up words
    # plus repeated 3-grams, benchmarks/demo_defaults.py); --temperature 0 is greedy.
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest tokens (0 = all)")
    g.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (1 = off)")
    g.add_argument("--repetition-penalty", type=float, default=1.2, help="CTRL's penalty on tokens seen (1 = off)")
    g.add_argument("--seed", type=int, help="reproducible sampling")
    g.add_argument("--stream", action="store_true", help="print the continuation as it is generated")
    g.set_defaults(func=_generate)
