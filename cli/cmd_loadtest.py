"""`glotta loadtest`: bounded Locust runs per concurrency level and an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import err, handles_errors


@handles_errors(RuntimeError)
def _loadtest(a: argparse.Namespace) -> int:
    from glotta.loadtests.loadtest_report import render_report
    from glotta.loadtests.run import run

    if a.report_from:
        page = render_report(Path(a.report_from))
    else:
        users = [int(x) for x in a.users.split(",")]
        page = run(a.target or [], a.variant or [], users, a.duration, a.scenario, Path(a.output),
                   a.max_requests, a.model, a.allow_remote, progress=lambda m: err.print(f"[dim]{m}[/]"))
    err.print(f"report: {page}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("loadtest", help="Locust latency/throughput runs against a gateway, with an HTML report")
    p.add_argument("--target", action="append", help="gateway URL (repeat twice to compare); default: start one")
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
