"""The load-test report: one self-contained HTML page (plots inlined as PNG) built only from the files a run saved
(`meta.json` and Locust's `*_stats.csv`), so `glotta loadtest --report-from DIR` rebuilds it byte for byte.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path

MAIN_TYPES = {"GET", "PUT", "POST"}


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _pct(row: dict | None, q: str) -> float | None:
    if row is None or row.get(q) in (None, "", "N/A"):
        return None
    return float(row[q])


def summarize(out: Path, run: dict, duration_s: float) -> dict:
    """One concurrency level: client figures from Locust, server figures from the Prometheus deltas."""
    rows = _rows(out / f"{run['csv']}_stats.csv")
    samples_path = out / f"{run['csv']}_samples.json"
    samples = json.loads(samples_path.read_text()) if samples_path.exists() else {}
    main = [r for r in rows if r["Type"] in MAIN_TYPES]
    by_type = {r["Type"]: r for r in rows if r["Type"] in ("TTFT", "ITL", "E2E")}
    count = sum(int(r["Request Count"]) for r in main)
    failures = sum(int(r["Failure Count"]) for r in main)
    latency = by_type.get("E2E") or max(main, key=lambda r: int(r["Request Count"]), default=None)
    e2e = samples.get("E2E")
    server = run["server"]
    seconds = max(duration_s, 1e-9)
    return {
        "users": run["users"],
        "requests": count,
        "failures": failures,
        "rps": count / seconds,
        "tokens_per_s": server.get("glotta_generation_tokens_total", 0.0) / seconds,
        "p50": _exact(samples, "E2E", 50) if e2e else _pct(latency, "50%"),
        "p95": _exact(samples, "E2E", 95) if e2e else _pct(latency, "95%"),
        "p99": _exact(samples, "E2E", 99) if e2e else _pct(latency, "99%"),
        "ttft_p50": _exact(samples, "TTFT", 50) or _pct(by_type.get("TTFT"), "50%"),
        "ttft_p95": _exact(samples, "TTFT", 95) or _pct(by_type.get("TTFT"), "95%"),
        "itl_p50": _exact(samples, "ITL", 50) or _pct(by_type.get("ITL"), "50%"),
        "itl_p95": _exact(samples, "ITL", 95) or _pct(by_type.get("ITL"), "95%"),
        "server_ttft_p50": _quantile(server, "glotta_time_to_first_token_seconds", 0.5),
        "server_e2e_p50": _quantile(server, "glotta_e2e_request_latency_seconds", 0.5),
        # share of prompt tokens the prefix cache served (few-shot templates share their demonstrations)
        "prefix_cache_hit": (server.get("glotta_prompt_tokens_cached_total", 0.0)
                             / server["glotta_prompt_tokens_total"]) if server.get("glotta_prompt_tokens_total") else None,
        "queue_wait_p50": _quantile(server, "glotta_queue_wait_seconds", 0.5),
    }


def _exact(samples: dict, kind: str, q: float) -> float | None:
    xs = sorted(samples.get(kind) or [])
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def _quantile(server: dict, name: str, q: float) -> float | None:
    """Quantile (ms) from a Prometheus histogram's bucket deltas, interpolated inside the bucket."""
    buckets = sorted((float(k.split("|")[1]), v) for k, v in server.items()
                     if k.startswith(name + "_bucket|") and k.split("|")[1] != "+Inf")
    total = server.get(name + "_count", 0.0)
    if not total:
        return None
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            frac = (rank - prev_count) / max(count - prev_count, 1e-9)
            return 1e3 * (prev_le + frac * (le - prev_le))
        prev_le, prev_count = le, count
    return 1e3 * buckets[-1][0] if buckets else None


def _plot(series: dict[str, list[tuple[int, float | None]]], ylabel: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for label, points in series.items():
        pts = [(x, y) for x, y in points if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    users = sorted({x for pts in series.values() for x, _ in pts})
    ax.set_xticks(users, [str(u) for u in users])
    ax.set_xlabel("concurrent users")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no version stamp: reproducible bytes
    plt.close(fig)
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


COLUMNS = [("users", "users", 0), ("requests", "requests", 0), ("failures", "failures", 0), ("rps", "req/s", 2),
           ("tokens_per_s", "output tok/s", 0), ("p50", "p50 ms", 0), ("p95", "p95 ms", 0), ("p99", "p99 ms", 0),
           ("ttft_p50", "TTFT p50", 1), ("ttft_p95", "TTFT p95", 1), ("itl_p50", "ITL p50", 1),
           ("itl_p95", "ITL p95", 1), ("server_ttft_p50", "server TTFT p50", 1),
           ("server_e2e_p50", "server e2e p50", 0), ("queue_wait_p50", "queue wait p50", 1),
           ("prefix_cache_hit", "prefix cache hit", 2)]


def duration_seconds(duration: str) -> float:
    """Locust's --run-time spelling (30s, 2m, 1h) in seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration.strip())
    if not m:
        raise ValueError(f"--duration takes 30s, 2m or 1h, not {duration!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def render_report(out: Path) -> Path:
    meta = json.loads((out / "meta.json").read_text())
    seconds = duration_seconds(meta["duration"])
    results: dict[str, list[dict]] = {}
    for run in meta["runs"]:
        results.setdefault(run["target"], []).append(summarize(out, run, min(run["wall_s"], seconds)))
    labels = list(results)
    m = meta["machine"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Glotta load test</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        ".plots{display:flex;flex-wrap:wrap;gap:8px}.bad{color:#b00}</style></head><body>",
        f"<h1>Glotta load test — scenario <code>{html.escape(meta['scenario'])}</code></h1>",
        f"<p><b>Machine:</b> {m['cores']} cores, {html.escape(m['cpu'])}; {html.escape(m['platform'])}; "
        f"Python {m['python']}, Locust {m['locust']}, Glotta {m['glotta']}. <b>Each level:</b> "
        f"{html.escape(meta['duration'])}, users {', '.join(map(str, meta['users']))}; load generated on the same "
        "machine as the server.</p><ul>",
    ]
    for t in meta["targets"]:
        served = ", ".join(f"{d['id']} ({d.get('engine') or '?'}, context {d.get('max_model_len')})"
                           for d in t["models"])
        parts.append(f"<li><b>{html.escape(t['label'])}</b> ({html.escape(t['engine'])}): {html.escape(served)}</li>")
    parts.append("</ul>")
    for label, rows in results.items():
        parts.append(f"<h2>{html.escape(label)}</h2><table><tr>" + "".join(f"<th>{h}</th>" for _, h, _ in COLUMNS)
                     + "</tr>")
        for r in rows:
            cells = "".join(f"<td{' class=bad' if k == 'failures' and r[k] else ''}>{_fmt(r[k], d)}</td>"
                            for k, _, d in COLUMNS)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    if len(labels) == 2:
        a, b = labels
        parts.append(f"<h2>{html.escape(b)} / {html.escape(a)}</h2><table><tr><th>users</th><th>req/s</th>"
                     "<th>output tok/s</th><th>p50</th><th>TTFT p50</th></tr>")
        for ra, rb in zip(results[a], results[b]):
            ratio = [None if not ra[k] or rb[k] is None else rb[k] / ra[k]
                     for k in ("rps", "tokens_per_s", "p50", "ttft_p50")]
            parts.append(f"<tr><td>{ra['users']}</td>" + "".join(f"<td>{_fmt(x, 2)}×</td>" if x else "<td>–</td>"
                                                                  for x in ratio) + "</tr>")
        parts.append("</table>")
    plots = [("rps", "requests/s", "Throughput (requests)"), ("tokens_per_s", "tokens/s", "Output tokens/s (server)"),
             ("p50", "ms", "Latency p50"), ("p95", "ms", "Latency p95"), ("p99", "ms", "Latency p99"),
             ("ttft_p50", "ms", "Time to first token p50"), ("itl_p50", "ms", "Inter-token latency p50"),
             ("server_ttft_p50", "ms", "Server TTFT p50 (Prometheus)")]
    parts.append("<div class='plots'>")
    for key, ylabel, title in plots:
        series = {label: [(r["users"], r[key]) for r in rows] for label, rows in results.items()}
        if any(y is not None for pts in series.values() for _, y in pts):
            parts.append(_plot(series, ylabel, title))
    parts.append("</div><p>Client figures come from Locust (streaming: TTFT, ITL and end-to-end read from the SSE "
                 "events); output tokens/s and the server columns from the gateway's own Prometheus metrics, "
                 "scraped before and after each level.</p></body></html>")
    page = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(page)
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    return page
