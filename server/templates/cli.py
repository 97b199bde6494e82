"""`glotta prompt list|show|run|eval`: the template library through a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)  # messages whole: no wrapping in the middle of a path
err = Console(stderr=True, soft_wrap=True)


def _inputs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep:
            raise ValueError(f"--input takes NAME=VALUE, not {p!r}")
        out[key] = value
    return out


def _run(a: argparse.Namespace) -> int:
    from glotta.clients.client import GlottaClient, GlottaError

    from .evaluate import DataError, evaluate, save_chart, save_json

    try:
        with GlottaClient(a.url) as client:
            if a.action == "list":
                t = Table("name", "task", "lang", "mode", "inputs", "labels")
                for m in client.templates():
                    t.add_row(m["name"], m["task"], m["language"], m["mode"], ", ".join(m["inputs"]),
                              ", ".join(m["labels"]))
                console.print(t)
            elif a.action == "show":
                console.print_json(json.dumps(client.template(a.name)))
            elif a.action == "run":
                out = client.run_template(a.name, _inputs(a.input), k=a.k, mode=a.mode, paraphrase=a.paraphrase,
                                          model=a.model)
                console.rule("prompt")
                console.print(out["prompt"], markup=False, highlight=False)
                console.rule("answer")
                console.print(f"{out['answer']}" + (f"  (label: {out['label']})" if out["label"] else ""),
                              markup=False)
                for label, s in sorted((out.get("scores") or {}).items(), key=lambda x: -x[1]):
                    console.print(f"  {label:<16} {s:8.3f}", markup=False)
            else:
                ks = [int(x) for x in a.k_list.split(",")]
                template, cells = asyncio.run(evaluate(a.url, a.name, Path(a.data), ks, a.paraphrases, a.model))
                t = Table(title=f"{a.name} on {a.data} ({cells[0].n} examples)")
                for col in ("k", "pattern", cells[0].metric, *(["chrF"] if cells[0].chrf is not None else [])):
                    t.add_column(col, justify="right")
                for c in cells:
                    t.add_row(str(c.k), "pattern" if c.paraphrase == 0 else f"paraphrase {c.paraphrase}",
                              f"{c.value:.3f}", *([f"{c.chrf:.1f}"] if c.chrf is not None else []))
                console.print(t)
                if template.get("baseline"):
                    console.print("baselines: " + ", ".join(f"{k} {v:.3f}" for k, v in template["baseline"].items()))
                out = Path(a.output)
                console.print(f"wrote {save_json(template, cells, out / f'{a.name}.json')} and "
                              f"{save_chart(template, cells, out / f'{a.name}.png')}")
    except (GlottaError, DataError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        return 1
    except (httpx.TransportError, OSError) as e:
        err.print(f"[red]error:[/] cannot reach {a.url}: {e}")
        return 1
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("prompt", help="few-shot prompt templates: list, show, run, eval")
    p.add_argument("action", choices=["list", "show", "run", "eval"])
    p.add_argument("name", nargs="?")
    p.add_argument("--url", default="http://localhost:5000")
    p.add_argument("--model")
    p.add_argument("--input", action="append", metavar="NAME=VALUE", help="run: a template input (repeatable)")
    p.add_argument("--k", type=int, default=0, help="run: examples shown before the query")
    p.add_argument("--mode", choices=["score", "generate"])
    p.add_argument("--paraphrase", type=int, default=0)
    p.add_argument("--data", help="eval: JSONL of {\"inputs\": {...}, \"label\"|\"answer\": ...}")
    p.add_argument("--k-list", default="0,1,3", help="eval: the k values to compare")
    p.add_argument("--paraphrases", action="store_true", help="eval: also every paraphrase of the pattern")
    p.add_argument("--output", default="prompt-eval", help="eval: folder for the JSON and the PNG chart")
    p.set_defaults(func=_checked)


def _checked(a: argparse.Namespace) -> int:
    if a.action != "list" and not a.name:
        err.print(f"[red]error:[/] `glotta prompt {a.action}` needs a template name")
        return 2
    if a.action == "eval" and not a.data:
        err.print("[red]error:[/] `glotta prompt eval` needs --data labelled.jsonl")
        return 2
    return _run(a)
