"""Real headless Locust runs against the test gateway, and the report built from their files."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from glotta.loadtests.loadtest_report import render_report
from glotta.loadtests.run import run

from .conftest import FR, REPO


@pytest.fixture(scope="module")
def stream_run(gateway, tmp_path_factory):
    out = tmp_path_factory.mktemp("lt-stream")
    run([gateway.url], [], [2], "3s", "stream", out, progress=lambda m: None)
    return out


def test_stream_run_writes_csvs_and_report_with_ttft_itl(stream_run):
    out = stream_run
    assert (out / "target-u2_stats.csv").exists() and (out / "target-u2_stats_history.csv").exists()
    stats = (out / "target-u2_stats.csv").read_text()
    assert "TTFT,time to first token" in stats and "ITL,inter-token latency" in stats
    summary = json.loads((out / "summary.json").read_text())["target"][0]
    assert summary["requests"] > 0 and summary["failures"] == 0
    assert summary["ttft_p50"] > 0 and summary["itl_p50"] > 0 and summary["tokens_per_s"] > 0
    page = (out / "report.html").read_text()
    assert "Time to first token p50" in page and " cores, " in page and "glotta-fr-tiny" in page
    assert page.count("data:image/png;base64,") >= 6


def test_report_is_deterministic_from_saved_files(stream_run, tmp_path):
    first = (stream_run / "report.html").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(stream_run, copy)
    (copy / "report.html").unlink()
    assert render_report(copy).read_bytes() == first
    assert render_report(copy).read_bytes() == first


@pytest.mark.parametrize("scenario", ["api", "completions", "templates"])
def test_other_scenarios_and_comparison(gateway, tmp_path, scenario):
    out = tmp_path / scenario
    run([gateway.url, gateway.url], [], [1], "2s", scenario, out, progress=lambda m: None)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"target1", "target2"}
    for rows in summary.values():
        assert rows[0]["requests"] > 0 and rows[0]["failures"] == 0
        if scenario == "templates":  # the few-shot demonstrations come from the prefix cache
            assert rows[0]["prefix_cache_hit"] > 0.3
    assert "target2 / target1" in (out / "report.html").read_text()
    assert "prefix cache hit" in (out / "report.html").read_text()


def test_request_budget_stops_the_run(gateway, tmp_path):
    out = tmp_path / "budget"
    run([gateway.url], [], [2], "60s", "completions", out, max_requests=5, progress=lambda m: None)
    meta = json.loads((out / "meta.json").read_text())
    summary = json.loads((out / "summary.json").read_text())["target"][0]
    assert summary["requests"] <= 5 + 2  # the budget, plus what the 2 users had in flight
    assert meta["runs"][0]["stopped_by"] == "request budget"  # not the 60 s run time


def test_remote_targets_are_refused_before_any_traffic(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        run(["http://10.1.2.3:5000"], [], [1], "1s", "completions", tmp_path, progress=lambda m: None)
    assert not (tmp_path / "meta.json").exists()


def test_cli_starts_its_own_server_and_rebuilds_the_report(tmp_path):
    """`glotta loadtest --variant fp32` starts (and stops) a gateway itself; `--report-from` rebuilds the page
    byte for byte from the saved files."""
    out = tmp_path / "lt"
    env = {**os.environ, "GLOTTA_MODEL_REPOSITORY": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "loadtest", "--variant", "fp32", "--users", "1",
                        "--duration", "2s", "--scenario", "completions", "--max-requests", "10", "--model", FR,
                        "--output", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runs"][0]["target"] == "fp32" and meta["runs"][0]["stopped_by"] in ("request budget", "run time")
    first = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "loadtest", "--report-from", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (out / "report.html").read_bytes() == first
