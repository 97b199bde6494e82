"""The Python clients and the `glotta` command line against the real gateway."""

import asyncio
import subprocess
import sys

import pytest

from glotta.clients.client import AsyncGlottaClient, GlottaClient, GlottaError


def test_sync_client(gateway):
    with GlottaClient(gateway.url) as c:
        out = c.api(["Le noyau", "La"], 5, top_k=1)
        assert len(out["text"]) == 2 and out["text"][0].startswith("Le noyau")
        done = c.complete("Le noyau", 6, temperature=0)["choices"][0]["text"]
        assert "".join(c.stream("Le noyau", 6, temperature=0)) == done
        assert set(c.models()) == {"glotta-fr-tiny", "glotta-es-tiny"}
        with pytest.raises(GlottaError) as e:
            c.api(["x"], -1)
        assert e.value.status == 400 and e.value.param == "tokens_to_generate"
        with pytest.raises(GlottaError) as e:
            list(c.stream("x", 10**6))
        assert e.value.status == 400


def test_async_client(gateway):
    async def go():
        async with AsyncGlottaClient(gateway.url) as c:
            outs = await asyncio.gather(*(c.api("Debian", 4, top_k=1) for _ in range(4)))
            assert len({o["text"][0] for o in outs}) == 1
            parts = [p async for p in c.stream("Debian", 4, temperature=0)]
            assert "Debian" + "".join(parts) == outs[0]["text"][0]

    asyncio.run(go())


def test_cli_generate_prints_the_same_text_with_and_without_stream(gateway):
    host_port = gateway.url.removeprefix("http://")  # `--url host:port` works as well as a URL
    outs = []
    for extra, url in (([], gateway.url), (["--stream"], host_port), (["--stream"], gateway.url)):
        r = subprocess.run([sys.executable, "-m", "glotta.cli", "generate", "Le système", "--url", url,
                            "--max-tokens", "12", "--seed", "3", *extra],  # the sampled defaults
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0].startswith("Le système") and len(outs[0].strip()) > len("Le système")
    assert outs[0] == outs[1] == outs[2]


def test_cli_errors_are_clear():
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "serve", "--model", "no-such-model"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no-such-model" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "generate", "x", "--url", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot reach" in r.stderr and "Traceback" not in r.stderr
