"""Each README promise that no other test reached, held to by a test that fails if the promise breaks."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import httpx
import pytest

from glotta.training.data.blocks.quality import Quality
from glotta.training.data.records import Doc

from .conftest import FR, REPO, Gateway

ENV = {"GLOTTA_MODEL_REPOSITORY": str(REPO)}


def _api(http, **body) -> dict:
    r = http.put("/api", json={"tokens_to_generate": 8, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_prevent_newline_after_colon(http):
    """Megatron's flag, with the colon tokens of this vocabulary: French writes " :", a token of its own."""
    prompts = ["Options :", "Remarque :", "Description :", "Voici la liste :"]
    free = [_api(http, prompts=[p], top_k=1)["text"][0][len(p):] for p in prompts]
    assert sum(f.startswith("\n") for f in free) >= 3  # the model does put a newline after a colon
    for p in prompts:
        out = _api(http, prompts=[p], top_k=1, prevent_newline_after_colon=True, tokens_to_generate=24)
        segments = out["segments"][0]
        for before, after in zip(segments, segments[1:]):
            assert not (before.endswith(":") and "\n" in after), (p, segments)


def test_add_bos_puts_the_eod_token_first(http):
    out = _api(http, prompts=[""], add_BOS=True, top_k=1, tokens_to_generate=4)
    assert out["segments"][0][0] == "<|endoftext|>" and out["text"][0].startswith("<|endoftext|>")
    with_bos = _api(http, prompts=["Le"], add_BOS=True, top_k=1)
    assert with_bos["segments"][0][:2] == ["<|endoftext|>", "Le"]


def test_top_p_decay_and_bound_end_to_end(http):
    """top_p shrinks by top_p_decay each token down to top_p_bound: with a tiny decay and bound, only the first
    token is sampled and the rest is the greedy continuation of it."""
    p = "Le noyau Linux"
    sampled = _api(http, prompts=[p], top_p=0.95, top_p_decay=1e-6, top_p_bound=1e-6, random_seed=3,
                   tokens_to_generate=12)["segments"][0]
    first = "".join(sampled[: len(_api(http, prompts=[p], top_k=1, tokens_to_generate=1)["segments"][0])])
    greedy = _api(http, prompts=[first], top_k=1, tokens_to_generate=11)["text"][0]
    assert "".join(sampled) == greedy
    again = _api(http, prompts=[p], top_p=0.95, top_p_decay=1e-6, top_p_bound=1e-6, random_seed=3,
                 tokens_to_generate=12)["segments"][0]
    assert again == sampled


def test_models_report_their_context_length(http):
    cards = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    meta = {name: json.loads((REPO / name / "glotta.json").read_text()) for name in cards}
    assert {n: c["max_model_len"] for n, c in cards.items()} == {n: m["architecture"]["n_positions"] for n, m in meta.items()}


def test_access_log_line_names_the_request_id(gateway, http):
    http.put("/api", json={"prompts": ["Le"], "tokens_to_generate": 1}, headers={"X-Request-Id": "promise-4242"})
    deadline = time.time() + 10
    while time.time() < deadline:
        lines = [json.loads(x.split(": ", 1)[1]) for x in gateway.log.read_text().splitlines()
                 if "glotta.access" in x and "promise-4242" in x]
        if lines:
            break
        time.sleep(0.1)
    assert lines and lines[0] == {**lines[0], "request_id": "promise-4242", "method": "PUT", "path": "/api",
                                  "status": 200}


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory):
    """A queue timeout no request can meet, and a request timeout that ends generations after their first token."""
    d = tmp_path_factory.mktemp("timeouts")
    gw = Gateway(["--model", FR, "--threads", "1", "--queue-timeout", "0.000001"], d / "queue.log", env=ENV)
    yield gw
    gw.stop()


def test_queue_timeout_is_a_504(slow_gateway):
    r = httpx.put(slow_gateway.url + "/api", json={"prompts": ["Le"], "tokens_to_generate": 4}, timeout=60)
    assert r.status_code == 504 and "queue timeout" in r.json()["message"]


def test_an_error_after_the_stream_started_is_an_sse_error_event(tmp_path):
    gw = Gateway(["--model", FR, "--threads", "1", "--request-timeout", "0.3"], tmp_path / "serve.log", env=ENV)
    try:
        body = {"prompt": "Le", "max_tokens": 480, "temperature": 0, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200  # the headers went out with the first tokens
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[0])["choices"]
        error = json.loads(events[-2])["error"]
        assert error["type"] == "timeout" and "request timeout (0.3 s)" in error["message"]
    finally:
        gw.stop()


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_serve_quantized(tmp_path, precision):
    gw = Gateway(["--model", FR, "--precision", precision], tmp_path / "serve.log", env=ENV)
    try:
        cards = httpx.get(gw.url + "/v1/models").json()["data"]
        assert [c["engine"] for c in cards] == [precision]
        r = httpx.post(gw.url + "/v1/completions", json={"prompt": "Le noyau", "max_tokens": 6, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 6
    finally:
        gw.stop()


def test_data_merge_cli(tmp_path):
    tok = REPO / FR
    for name, n in (("a", 3), ("b", 5)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"Texte {name} {i}."}) + "\n"
                                                        for i in range(n)))
        r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "convert", "--input",
                            str(tmp_path / f"{name}.jsonl"), "--output-prefix", str(tmp_path / name), "--vocab-file",
                            str(tok / "vocab.json"), "--merge-file", str(tok / "merges.txt"), "--append-eod",
                            "--workers", "1"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    prefixes = [str(tmp_path / f"{n}_text_document") for n in ("a", "b")]
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "merge", "--inputs", *prefixes,
                        "--output-prefix", str(tmp_path / "all")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "inspect", str(tmp_path / "all"), "--doc", "4",
                        "--tokenizer", str(tok)], capture_output=True, text=True, timeout=120)
    assert "8 documents" in r.stdout and "Texte b 1." in r.stdout  # a's 3 documents, then b's


def test_prepare_text_key_and_blacklist_threshold(tmp_path):
    text = ("Le système de fichiers garde les données des utilisateurs dans des répertoires organisés, et la "
            "commande suivante affiche la liste des paquets installés sur la machine avec leur version exacte. ")
    rows = [{"body": text * 2 + f"Document {i}. " + ("Un jackpot et une machine à sous. " if i % 2 else "")} for i in range(8)]
    with gzip.open(tmp_path / "in.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def prepare(out: str, *extra: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "blacklist", "--input",
                            str(tmp_path / "in.jsonl.gz"), "--output", str(tmp_path / out), "--lang", "fr",
                            "--text-key", "body", *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads((tmp_path / out / "stats.json").read_text())

    assert prepare("t2")["stages"]["blacklist"]["docs_out"] == 4  # two distinct terms: removed
    assert prepare("t3", "--blacklist-threshold", "3")["stages"]["blacklist"]["docs_out"] == 8
    subprocess.run([sys.executable, "-m", "glotta.cli", "data", "blacklist", "--input",
                    str(tmp_path / "in.jsonl.gz"), "--output", str(tmp_path / "none"), "--lang", "fr"],
                   capture_output=True, text=True, timeout=120)
    assert json.loads((tmp_path / "none" / "stats.json").read_text())["malformed"]["count"] == 8  # no `text` key


@pytest.mark.parametrize("make,reason", [
    (lambda w: " ".join(["Anticonstitutionnellement"] * 60), "gopher_mean_word_length"),
    (lambda w: "\n".join(f"- {' '.join(w[i:i + 8])}" for i in range(0, 80, 8)), "gopher_bullet_lines"),
    (lambda w: "\n".join(' '.join(w[i:i + 16]) + ("..." if i % 32 else ".") for i in range(0, 160, 16)),
     "gopher_ellipsis_lines"),
    (lambda w: " ".join(w[:30]) + " " + " ".join(["1234"] * 30), "gopher_non_alpha_words"),
    (lambda w: "\n".join([" ".join(w[:10])] * 8), "gopher_duplicate_lines"),
])
def test_each_gopher_rule(make, reason):
    words = ("le chat de la maison est sur une table dans la pièce et il regarde pour que les enfants qui jouent "
             "pas loin").split() * 8
    assert Quality("fr")(Doc(make(words), "f", 1, "x")) == reason
    assert Quality("fr")(Doc(" ".join(words[:80]), "f", 1, "x")) is None  # the same words, well formed


def _readme_commands() -> list[str]:
    """Every command of the README's shell blocks: continuation lines joined, quoted newlines kept, comments
    dropped."""
    import re
    import shlex

    text = (REPO.parent / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        pending = ""
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            command = pending.split("  # ")[0].strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_readme_curl_and_cli_examples_run_as_written(gateway, chat_gateway, triton, tmp_path):
    """Each curl example of the README, copied as written (only the port changed), answers without curl's progress
    meter and without an error; so do the `glotta generate` and `glotta prompt` examples."""
    import json as json_lib
    import os
    import re
    import shutil

    if shutil.which("jq") is None and not os.environ.get("CI"):
        pytest.skip("jq (`make test` installs it with apt-get)")
    _, _, chat = chat_gateway
    ran = 0
    for cmd in _readme_commands():
        if cmd.startswith("curl"):
            assert re.search(r"\s-s[A-Za-z]*\s", cmd), f"no -s: curl's progress meter would print: {cmd}"
            if "localhost:8000" in cmd:
                cmd = cmd.replace("localhost:8000", f"127.0.0.1:{triton.http_port}")
            elif "localhost:5000" in cmd:
                target = chat if "chat/completions" in cmd or "my-qwen" in cmd else gateway
                cmd = cmd.replace("my-qwen", "qwen2").replace("localhost:5000", target.url.removeprefix("http://"))
            else:
                continue
        elif cmd.startswith(("glotta generate", "glotta prompt run", "glotta prompt list")):
            cmd = f"{sys.executable} -m glotta.cli {cmd[len('glotta '):]} --url {gateway.url}"
        else:
            continue
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.strip(), f"{cmd}\n{r.stdout}\n{r.stderr}"
        assert r.stderr == "", f"{cmd}\n{r.stderr}"
        out = r.stdout.strip()
        if out.startswith("data: "):
            assert out.endswith("data: [DONE]") and '"error"' not in out, cmd
        elif out.startswith("{"):
            assert "error" not in json_lib.loads(out), f"{cmd}\n{out}"
        ran += 1
    assert ran >= 12, ran
