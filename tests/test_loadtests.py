"""Real headless Locust runs against the test gateway, and the report built from their files."""

import json
import shutil

import pytest

from glotta.loadtests.report import render_report
from glotta.loadtests.run import run


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
    assert "target2 / target1" in (out / "report.html").read_text()


def test_request_budget_stops_the_run(gateway, tmp_path):
    out = tmp_path / "budget"
    run([gateway.url], [], [2], "60s", "completions", out, max_requests=5, progress=lambda m: None)
    meta = json.loads((out / "meta.json").read_text())
    summary = json.loads((out / "summary.json").read_text())["target"][0]
    assert summary["requests"] <= 5 + 2  # the budget, plus what the 2 users had in flight
    assert meta["runs"][0]["wall_s"] < 45  # ended by the budget, not by the 60 s run time


def test_remote_targets_are_refused_before_any_traffic(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        run(["http://10.1.2.3:5000"], [], [1], "1s", "completions", tmp_path, progress=lambda m: None)
    assert not (tmp_path / "meta.json").exists()
