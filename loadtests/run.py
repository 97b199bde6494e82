"""`glotta loadtest`: Locust headless at each concurrency level, against given targets or servers it starts itself,
with the server's own Prometheus figures taken before and after each level. Writes CSVs, `meta.json` and the report.

Every run is bounded: Locust's --run-time, a request budget inside the locustfile, and a process timeout. Targets
must be on loopback unless `allow_remote` is set.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from glotta.clients.local_gateway import LocalGateway
from glotta.core.net import free_port_block

from .loadtest_report import duration_seconds, render_report

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# scenario → user class of the locustfile (not imported here: importing locust monkey-patches the process)
SCENARIOS = {"api": "ApiUser", "completions": "CompletionsUser", "stream": "StreamUser", "templates": "TemplateUser"}
VARIANTS = {"fp32": [], "int8": ["--precision", "int8"], "triton": ["--engine", "triton"]}


@dataclass
class Target:
    label: str
    url: str
    server: LocalGateway | None = None
    info: dict = field(default_factory=dict)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{url} is not on loopback: pass --allow-remote to load a remote server on purpose")


def start_server(variant: str, models: list[str], log_dir: Path) -> Target:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (choose from {sorted(VARIANTS)})")
    extra = list(VARIANTS[variant])
    if variant == "triton":
        extra += ["--triton-base-port", str(free_port_block(3))]
    log_dir.mkdir(parents=True, exist_ok=True)
    args = ["--log-level", "warning", *(a for m in models for a in ("--model", m)), *extra]
    gateway = LocalGateway(args, log_dir / f"server-{variant}.log")
    return Target(variant, gateway.url, gateway)


def scrape(url: str) -> dict[str, float]:
    """Prometheus samples of the gateway, summed over label sets that differ only by model/endpoint/status."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(glotta_[a-z0-9_]+)(\{[^}]*\})? (\S+)$", line)
        if not m:
            continue
        le = re.search(r'le="([^"]+)"', m.group(2) or "")
        key = m.group(1) + (f"|{le.group(1)}" if le else "")
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from importlib.metadata import version

    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "locust": version("locust"),
            "glotta": version("glotta"), "platform": platform.platform()}


def run_level(target: Target, scenario: str, users: int, duration: str, out: Path, max_requests: int,
              models: dict[str, str]) -> dict:
    before = scrape(target.url)
    prefix = out / f"{target.label}-u{users}"
    env = {**os.environ, "GLOTTA_MAX_REQUESTS": str(max_requests), "GLOTTA_SAMPLES": f"{prefix}_samples.json",
           "GLOTTA_MODELS": ",".join(f"{k}={v}" for k, v in models.items())}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
           "--run-time", duration, "--host", target.url, "--csv", str(prefix), "--only-summary",
           "--stop-timeout", "10", "--loglevel", "WARNING", SCENARIOS[scenario]]
    t0 = time.time()
    seconds = duration_seconds(duration)
    subprocess.run(cmd, env=env, check=False, timeout=seconds + 120, capture_output=True)
    elapsed = time.time() - t0
    after = scrape(target.url)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    samples = Path(f"{prefix}_samples.json")
    stopped_by = json.loads(samples.read_text()).get("stopped_by") if samples.exists() else None
    return {"target": target.label, "url": target.url, "users": users, "csv": prefix.name, "wall_s": elapsed,
            "stopped_by": stopped_by, "server": delta}


def run(targets: list[str], variants: list[str], users: list[int], duration: str, scenario: str, output: Path,
        max_requests: int = 20000, models: list[str] | None = None, allow_remote: bool = False,
        progress=print) -> Path:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (choose from {sorted(SCENARIOS)})")
    duration_seconds(duration)
    models = models or ["glotta-fr-tiny", "glotta-es-tiny"]
    by_lang = {m.split("-")[1]: m for m in models if m.count("-") >= 2}
    for url in targets:
        if not allow_remote:
            check_loopback(url)
    output.mkdir(parents=True, exist_ok=True)
    planned: list[Target | str] = [Target(f"target{i + 1}" if len(targets) > 1 else "target", u)
                                   for i, u in enumerate(targets)] or list(variants or ["fp32"])
    meta = {"scenario": scenario, "duration": duration, "users": users, "machine": machine_info(),
            "models": models, "targets": [], "runs": []}
    for item in planned:
        target = item if isinstance(item, Target) else start_server(item, models, output)
        try:
            meta["targets"].append({"label": target.label, "url": target.url,
                                    "engine": "started by glotta loadtest" if target.server else "external",
                                    "models": httpx.get(target.url + "/v1/models", timeout=10).json()["data"]})
            for n in users:
                progress(f"{target.label}: {n} users, {duration}")
                meta["runs"].append(run_level(target, scenario, n, duration, output, max_requests, by_lang))
        finally:
            if target.server is not None:
                target.server.stop()
    tmp = output / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(output / "meta.json")
    return render_report(output)
