"""`glotta prompt list|show|run|eval`: the template library through a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
from rich.table import Table

from .common import console, fail, subcommands, url_option


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
    from glotta.clients.template_eval import DataError, evaluate, save_chart, save_json

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
        fail(e)
        return 1
    except (httpx.TransportError, OSError) as e:
        fail(f"cannot reach {a.url}: {e}")
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser("prompt", help="few-shot prompt templates through a running gateway: list, show, run, eval")
    actions = subcommands(p)

    def action(name: str, help: str, needs_name: bool = True) -> argparse.ArgumentParser:
        q = actions.add_parser(name, help=help)
        if needs_name:
            q.add_argument("name", help="template name (see `glotta prompt list`)")
        url_option(q)
        q.set_defaults(func=_run)
        return q

    action("list", "the templates the gateway serves", needs_name=False)
    action("show", "one template as JSON")
    run = action("run", "render the k-shot prompt and answer it")
    run.add_argument("--model", help="served model (default: the gateway's)")
    run.add_argument("--input", action="append", metavar="NAME=VALUE", help="a template input (repeatable)")
    run.add_argument("--k", type=int, default=0, help="examples shown before the query")
    run.add_argument("--mode", choices=["score", "generate"], help="default: the template's")
    run.add_argument("--paraphrase", type=int, default=0, help="0 = the template's pattern, i = its i-th paraphrase")
    ev = action("eval", "accuracy (or exact match and chrF) for each k, with baselines")
    ev.add_argument("--model", help="served model (default: the gateway's)")
    ev.add_argument("--data", required=True, help="JSONL of {\"inputs\": {...}, \"label\"|\"answer\": ...}")
    ev.add_argument("--k-list", default="0,1,3", help="the k values to compare")
    ev.add_argument("--paraphrases", action="store_true", help="also every paraphrase of the pattern")
    ev.add_argument("--output", default="prompt-eval", help="folder for the JSON and the PNG chart")
