"""Few-shot prompt templates: rendering, verbalizer scoring against the engine, API, CLI, validation, eval."""

import json
import subprocess
import sys

import pytest

from glotta.server.templates.library import BUILTIN, Template, TemplateError, load_file, load_library

from .conftest import ROOT

SENTIMENT = Template(
    name="t", task="sentiment", language="fr", mode="score", instruction="Critiques :",
    pattern="{{ text }} Le film est {{ answer }}.", inputs=["text"], separator="\n",
    verbalizer={"positive": ["bon"], "negative": ["nul"]},
    examples=[{"inputs": {"text": "Superbe."}, "label": "positive"},
              {"inputs": {"text": "Raté."}, "label": "negative"},
              {"inputs": {"text": "Drôle."}, "label": "positive"}],
)


@pytest.mark.parametrize("k,expected", [
    (0, "Critiques :\nQuel navet. Le film est"),
    (1, "Critiques :\nSuperbe. Le film est bon.\nQuel navet. Le film est"),
    (3, "Critiques :\nSuperbe. Le film est bon.\nRaté. Le film est nul.\nDrôle. Le film est bon.\nQuel navet. Le film est"),
])
def test_render_k_shot(k, expected):
    assert SENTIMENT.render({"text": "Quel navet."}, k=k) == expected


def test_render_chosen_examples_and_builtin_translation():
    assert SENTIMENT.render({"text": "X"}, example_ids=[2, 1]) == (
        "Critiques :\nDrôle. Le film est bon.\nRaté. Le film est nul.\nX. Le film est".replace("X.", "X"))
    lib = load_library()
    assert lib["translation-fr"].render({"source": "cheese"}, k=3) == (
        "Traduire de l'anglais vers le français :\nsea otter => loutre de mer\npeppermint => menthe poivrée\n"
        "plush giraffe => girafe en peluche\ncheese =>")


def test_builtin_library_covers_every_task_in_three_languages():
    lib = load_library()
    tasks = {"sentiment", "topic", "intention", "aspect-sentiment", "nli", "ner", "summarization", "translation",
             "fact"}
    assert {(t.task, t.language) for t in lib.values()} == {(t, lang) for t in tasks for lang in ("fr", "es", "en")}


@pytest.mark.parametrize("body,reason", [
    ("name: bad\ntask: x\nlanguage: fr\nmode: score\npattern: '{{ text }}'\ninputs: [text]\n", "answer"),
    ("name: bad\ntask: x\nlanguage: fr\nmode: score\npattern: '{{ text }} {{ answer }}'\ninputs: [text]\n",
     "verbalizer"),
    ("name: bad\ntask: x\nlanguage: fr\nmode: generate\npattern: '{{ txt }} {{ answer }}'\ninputs: [text]\n",
     "uses ['txt']"),
    ("name: other\ntask: x\nlanguage: fr\nmode: generate\npattern: '{{ text }} {{ answer }}'\ninputs: [text]\n",
     "must match the file name"),
    ("name: bad\ntask: [unclosed\n", "cannot read YAML"),
    ("name: bad\ntask: x\nlanguage: fr\nmode: generate\npattern: '{{ text }} {{ answer }}'\ninputs: [text]\n"
     "examples:\n- inputs: {text: a}\n", "needs an answer"),
])
def test_invalid_templates_are_rejected_with_file_and_reason(tmp_path, body, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(TemplateError) as e:
        load_file(path)
    assert str(path) in str(e.value) and reason in str(e.value)


def test_serve_refuses_to_start_on_a_bad_template_dir(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nmode: score\n")
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "serve", "--templates", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "broken.yaml" in r.stderr and "Traceback" not in r.stderr


def test_user_templates_extend_the_library(tmp_path):
    (tmp_path / "mine-fr.yaml").write_text(
        "name: mine-fr\ntask: custom\nlanguage: fr\nmode: generate\npattern: 'Q: {{ q }} R: {{ answer }}'\n"
        "inputs: [q]\n")
    lib = load_library(tmp_path)
    assert "mine-fr" in lib and "sentiment-fr" in lib and lib["mine-fr"].render({"q": "x"}) == "Q: x R:"


def _score(http, prompt: str, word: str) -> float:
    """log P(word | prompt) straight from the engine's scoring mode on PUT /api."""
    n_prompt = len(http.put("/api", json={"prompts": [prompt], "tokens_to_generate": 0, "logprobs": True})
                   .json()["segments"][0])
    full = http.put("/api", json={"prompts": [prompt + word], "tokens_to_generate": 0, "logprobs": True}).json()
    return sum(full["logprobs"][0][n_prompt - 1:])


def test_score_mode_picks_the_label_the_engine_scores_highest(http):
    body = {"inputs": {"text": "Les acteurs sont formidables."}, "k": 2}
    out = http.post("/v1/templates/sentiment-fr/run", json=body).json()
    template = http.get("/v1/templates/sentiment-fr").json()
    direct = {label: max(_score(http, out["prompt"], " " + w) for w in words)
              for label, words in template["verbalizer"].items()}
    assert out["scores"] == pytest.approx(direct, abs=1e-3)
    assert out["label"] == max(direct, key=direct.get)
    assert out["answer"] in template["verbalizer"][out["label"]]
    assert out["prompt"].endswith("Les acteurs sont formidables. Le film est")


def test_generate_mode_round_trip(http):
    out = http.post("/v1/templates/translation-fr/run", json={"inputs": {"source": "cheese"}, "k": 3}).json()
    assert out["mode"] == "generate" and out["prompt"].endswith("cheese =>")
    free = http.post("/v1/completions", json={"prompt": out["prompt"], "max_tokens": 12, "temperature": 0,
                                               "stop": ["\n"]}).json()["choices"][0]["text"]
    assert out["answer"] == free.strip()
    listing = http.get("/v1/templates").json()["data"]
    assert len(listing) == len(list(BUILTIN.glob("*.yaml")))


def test_generate_mode_with_labels_answers_only_its_labels(http):
    """A template with labels run in generate mode decodes only its label words (the structured-output mask); the
    same prompts left free wander off-label with this small model — the constraint is what keeps them on."""
    template = http.get("/v1/templates/sentiment-fr").json()
    words = {w for ws in template["verbalizer"].values() for w in ws}
    texts = ["Un film magnifique, je le reverrai.", "Ennuyeux du début à la fin.", "Les acteurs jouent faux.",
             "Une histoire touchante et drôle.", "Je n'ai rien compris au scénario."]
    off_label = 0
    for text in texts:
        out = http.post("/v1/templates/sentiment-fr/run", json={"inputs": {"text": text}, "mode": "generate",
                                                                 "k": 2}).json()
        assert out["answer"] in words and out["label"] in template["verbalizer"], out
        free = http.post("/v1/completions", json={"prompt": out["prompt"], "max_tokens": 6, "temperature": 0,
                                                   "stop": ["\n"]}).json()["choices"][0]["text"].strip()
        off_label += free not in words
    assert off_label > 0


@pytest.mark.parametrize("path,body,status,param", [
    ("/v1/templates/nope/run", {"inputs": {}}, 404, "name"),
    ("/v1/templates/sentiment-fr/run", {"inputs": {}}, 400, "inputs.text"),
    ("/v1/templates/nli-fr/run", {"inputs": {"hypothesis": "a"}}, 400, "inputs.premise"),
    ("/v1/templates/sentiment-fr/run", {"inputs": {"text": "a"}, "k": 9}, 400, "k"),
    ("/v1/templates/sentiment-fr/run", {"inputs": {"text": "a"}, "paraphrase": 7}, 400, "paraphrase"),
    ("/v1/templates/translation-fr/run", {"inputs": {"source": "a"}, "mode": "score"}, 400, "mode"),
])
def test_template_errors(http, path, body, status, param):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    assert http.get("/v1/templates/nope").status_code == 404


def test_cli_run_and_eval(gateway, tmp_path):
    run = subprocess.run([sys.executable, "-m", "glotta.cli", "prompt", "run", "topic-fr", "--url",
                          gateway.url, "--input", "text=Le noyau charge les pilotes.", "--k", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Ce texte parle de" in run.stdout and "label:" in run.stdout
    data = ROOT / "server" / "templates" / "eval" / "sentiment-fr.jsonl"
    ev = subprocess.run([sys.executable, "-m", "glotta.cli", "prompt", "eval", "sentiment-fr", "--url",
                         gateway.url, "--data", str(data), "--k-list", "0,1", "--paraphrases", "--output",
                         str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    result = json.loads((tmp_path / "sentiment-fr.json").read_text())
    assert len(result["cells"]) == 2 * 3  # k ∈ {0, 1} × (pattern + 2 paraphrases)
    assert all(0.0 <= c["value"] <= 1.0 and c["n"] == 16 for c in result["cells"])
    assert result["baseline"]["majority class"] == 0.5
    assert (tmp_path / "sentiment-fr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_eval_reports_bad_data_with_file_and_line(gateway, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"inputs": {"text": "a"}, "label": "positive"}\n{"inputs": {"text": "b"}\n')
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "prompt", "eval", "sentiment-fr", "--url",
                        gateway.url, "--data", str(data), "--output", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"{data}:2" in r.stderr and "Traceback" not in r.stderr


def test_lone_surrogate_input_is_a_400(http):
    r = http.post("/v1/templates/sentiment-fr/run", content=b'{"inputs": {"text": "a \\udc80 b"}}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "inputs.text"


def test_eval_scores_are_recomputed_from_the_engines_own_answers(gateway, http, tmp_path):
    """Accuracy from each example's label scores, exact match and chrF from the answers: recomputed here from
    /v1/templates/.../run and compared with what `glotta prompt eval` reports."""
    import sacrebleu

    data = ROOT / "server" / "templates" / "eval" / "sentiment-fr.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    ev = subprocess.run([sys.executable, "-m", "glotta.cli", "prompt", "eval", "sentiment-fr", "--url", gateway.url,
                         "--data", str(data), "--k-list", "1", "--output", str(tmp_path)], capture_output=True,
                        text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    (cell,) = json.loads((tmp_path / "sentiment-fr.json").read_text())["cells"]
    labels = []
    for row in rows:
        r = http.post("/v1/templates/sentiment-fr/run", json={"inputs": row["inputs"], "k": 1})
        assert r.status_code == 200, r.text
        scores = r.json()["scores"]
        labels.append(max(scores, key=scores.get))
    assert cell["value"] == sum(a == r["label"] for a, r in zip(labels, rows)) / len(rows)

    sources = ["dog", "cat", "house", "tree"]
    answers = [http.post("/v1/templates/translation-fr/run", json={"inputs": {"source": s}, "k": 2}).json()["answer"]
               for s in sources]
    refs = [answers[0], "chat", "maison", "arbre"]  # the first is right by construction
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"inputs": {"source": s}, "answer": r}) + "\n" for s, r in zip(sources, refs)))
    ev = subprocess.run([sys.executable, "-m", "glotta.cli", "prompt", "eval", "translation-fr", "--url", gateway.url,
                         "--data", str(gen), "--k-list", "2", "--output", str(tmp_path)], capture_output=True,
                        text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    (cell,) = json.loads((tmp_path / "translation-fr.json").read_text())["cells"]
    norm = lambda t: " ".join(t.lower().strip().strip(".").split())  # noqa: E731 - eval's rule: case, spaces, final dot
    assert cell["value"] == sum(norm(a) == norm(r) for a, r in zip(answers, refs)) / 4 >= 0.25
    assert cell["chrf"] == pytest.approx(sacrebleu.corpus_chrf(answers, [refs]).score)
