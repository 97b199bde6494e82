"""lm-evaluation-harness, run as its users run it, against the gateway: `local-completions` (token-id prompts, echo,
log-probs) for a log-likelihood task, `local-chat-completions` for a generation task — on small French/Spanish tasks
written here (no Hub download). Its log-likelihoods equal those of its own `hf` backend on the same folder."""

import json

import pytest

from .hf_folders import PROMPTS

QUESTIONS = [
    ("La capitale de la France est", [" Paris", " Lyon", " Madrid"], 0),
    ("La capital de España es", [" Madrid", " Barcelona", " Sevilla"], 0),
    ("Le noyau Linux est écrit en", [" C", " Python", " Java"], 0),
    ("El perro duerme en el", [" sofá", " coche", " tejado"], 0),
    ("Pour installer un paquet, utilisez", [" apt", " rm", " ls"], 0),
]


def _tasks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "mc.jsonl", "w", encoding="utf-8") as f:
        for q, choices, answer in QUESTIONS:
            f.write(json.dumps({"question": q, "choices": choices, "answer": answer}, ensure_ascii=False) + "\n")
    with open(data / "gen.jsonl", "w", encoding="utf-8") as f:
        for p in PROMPTS:
            f.write(json.dumps({"question": p, "answer": "oui"}, ensure_ascii=False) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "glotta_mc.yaml").write_text(f"""task: glotta_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data / "mc.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
""")
    (tasks / "glotta_gen.yaml").write_text(f"""task: glotta_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data / "gen.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
metric_list:
  - metric: exact_match
""")
    return tasks


@pytest.fixture()
def offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def test_local_completions_log_likelihoods_equal_the_hf_backend(chat_gateway, tmp_path, offline):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    folder, _, gw = chat_gateway
    tm = TaskManager(include_path=str(_tasks(tmp_path)))
    api = simple_evaluate(model="local-completions", tasks=["glotta_mc"], task_manager=tm, log_samples=True,
                          model_args=f"model=qwen2,base_url={gw.url}/v1/completions,tokenizer_backend=huggingface,"
                                     f"tokenizer={folder},num_concurrent=1,max_retries=1")
    hf = simple_evaluate(model="hf", tasks=["glotta_mc"], task_manager=tm, log_samples=True,
                         model_args=f"pretrained={folder},dtype=float32,device=cpu")
    a, b = api["samples"]["glotta_mc"], hf["samples"]["glotta_mc"]
    assert len(a) == len(b) == len(QUESTIONS)
    for x, y in zip(sorted(a, key=lambda s: s["doc_id"]), sorted(b, key=lambda s: s["doc_id"])):
        for (lx, _), (ly, _) in zip((r[0] for r in x["resps"]), (r[0] for r in y["resps"])):
            assert lx == pytest.approx(ly, abs=1e-3), (x["doc"], lx, ly)
    assert api["results"]["glotta_mc"]["acc,none"] == hf["results"]["glotta_mc"]["acc,none"]


def test_local_chat_completions_generation_runs(chat_gateway, tmp_path, offline):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    _, _, gw = chat_gateway
    tm = TaskManager(include_path=str(_tasks(tmp_path)))
    out = simple_evaluate(model="local-chat-completions", tasks=["glotta_gen"], task_manager=tm, log_samples=True,
                          apply_chat_template=True, model_args=f"model=qwen2,base_url={gw.url}/v1/chat/completions,"
                                                               f"num_concurrent=1,max_retries=1")
    samples = out["samples"]["glotta_gen"]
    assert len(samples) == len(PROMPTS) and all(isinstance(s["resps"][0][0], str) for s in samples)
    assert "exact_match,none" in out["results"]["glotta_gen"]
