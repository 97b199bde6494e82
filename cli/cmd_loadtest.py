"""`glotta loadtest`: bounded Locust runs per concurrency level and an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from glotta.core.progress import interactive, rich_progress

from .common import err, handles_errors, url_option


@handles_errors(RuntimeError)
def _loadtest(a: argparse.Namespace) -> int:
    from glotta.loadtests.loadtest_report import render_report
    from glotta.loadtests.run import run

    if a.report_from:
        page = render_report(Path(a.report_from))
    else:
        users = [int(x) for x in a.users.split(",")]
        levels = len(users) * len(a.url or a.variant or ["fp32"])
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with rich_progress(*columns) as bar:  # a bar on a terminal; one line per level in a log
            task = bar.add_task("starting", total=levels)

            def level(message: str) -> None:
                if bar.tasks[0].description != "starting":
                    bar.advance(task)
                bar.update(task, description=message)
                if not interactive():
                    err.print(f"[dim]{message}[/]")

            page = run(a.url or [], a.variant or [], users, a.duration, a.scenario, Path(a.output),
                       a.max_requests, a.model, a.allow_remote, progress=level)
            bar.update(task, completed=levels)
    err.print(f"report: {page}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("loadtest", help="Locust latency/throughput runs against a gateway, with an HTML report")
    url_option(p, "--url", "--target", action="append", default=None, dest="url",
               help="a running gateway, host:port or URL (repeat twice to compare; default: start one per --variant)")
    p.add_argument("--variant", action="append", choices=["fp32", "int8", "triton"],
                   help="server to start when no target is given (repeat to compare, e.g. fp32 and int8)")
    p.add_argument("--users", default="1,4,16,64", help="concurrency levels")
    p.add_argument("--duration", default="60s", help="per level (30s, 2m)")
    p.add_argument("--scenario", default="completions", choices=["api", "completions", "stream", "templates"],
                   help="which Locust users run")
    p.add_argument("--output", default="loadtest-report", help="folder for the CSVs, meta.json and report.html")
    p.add_argument("--max-requests", type=int, default=20000, help="per level: the run stops after this many")
    p.add_argument("--model", action="append", help="models the started server serves (default: fr and es)")
    p.add_argument("--allow-remote", action="store_true", help="allow a target that is not on loopback")
    p.add_argument("--report-from", metavar="DIR", help="only rebuild the report from a finished run's files")
    p.set_defaults(func=_loadtest)
