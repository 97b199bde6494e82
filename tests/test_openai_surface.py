"""The OpenAI surface as its users reach it — the official `openai` client, against a Hugging Face Qwen2 folder that
ships a chat template (the real Qwen2.5 one): chat (plain and streamed, prompt tokens equal to
`apply_chat_template`'s), structured outputs that validate with `jsonschema`, logit_bias, penalties checked against
transformers and against their definition, n and best_of, token-id prompts, refusals of what is not implemented, and
the same over gRPC."""

import json

import grpc
import jsonschema
import numpy as np
import pytest
import torch
from openai import BadRequestError, OpenAI
from transformers import AutoTokenizer

from glotta.core.tokenizer import Tokenizer
from glotta.server.grpc_api import load_stubs

from .conftest import FR, REPO
from .hf_folders import hf_generate

MESSAGES = [{"role": "system", "content": "Tu es un assistant qui répond en français."},
            {"role": "user", "content": "Quelle est la capitale de l'Espagne ?"}]
SCHEMA = {"type": "object", "properties": {"ville": {"type": "string", "maxLength": 30},
                                           "habitants": {"type": "integer", "minimum": 0},
                                           "langues": {"type": "array", "items": {"enum": ["es", "ca", "fr"]},
                                                       "maxItems": 3}},
          "required": ["ville", "habitants", "langues"], "additionalProperties": False}


@pytest.fixture(scope="module")
def served(chat_gateway):
    return chat_gateway


@pytest.fixture(scope="module")
def client(served):
    return OpenAI(base_url=served[2].url + "/v1", api_key="none", max_retries=0)


def _template_ids(folder) -> list[int]:
    ids = AutoTokenizer.from_pretrained(folder).apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                                    tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_chat_as_transformers_renders_and_generates_it(served, client):
    folder, model, _ = served
    ids = _template_ids(folder)
    out = client.chat.completions.create(model="qwen2", messages=MESSAGES, max_tokens=12, temperature=0)
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    assert out.usage.prompt_tokens == len(ids)
    gen = hf_generate(model, ids, 12)
    tok = AutoTokenizer.from_pretrained(folder)
    assert out.choices[0].message.content == tok.decode(gen, skip_special_tokens=True)
    assert out.usage.completion_tokens == len(gen)
    streamed = client.chat.completions.create(model="qwen2", messages=MESSAGES, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == out.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == len(ids) and chunks[-1].choices == []


def test_chat_without_a_template_is_a_400_that_says_what_to_do(client):
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="glotta-fr-tiny", messages=MESSAGES)
    assert "--chat-template" in str(e.value) and e.value.body["param"] == "messages"


@pytest.mark.parametrize("field,value", [("tools", [{"type": "function", "function": {"name": "f"}}]),
                                         ("echo", True), ("audio", {"voice": "alloy", "format": "wav"})])
def test_standard_fields_not_implemented_are_refused_by_name(client, field, value):
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="qwen2", messages=MESSAGES, max_tokens=2, extra_body={field: value})
    assert e.value.body["param"] == field


def test_json_schema_answers_validate(client):
    """Sampled at temperature 1 with several seeds: every answer that ends by itself parses and validates."""
    fmt = {"type": "json_schema", "json_schema": {"name": "ville", "schema": SCHEMA, "strict": True}}
    finished = 0
    for seed in range(6):
        out = client.chat.completions.create(model="qwen2", messages=MESSAGES, max_tokens=80, seed=seed,
                                             response_format=fmt)
        choice = out.choices[0]
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content), SCHEMA)
            finished += 1
        else:
            assert choice.finish_reason == "length"
    assert finished >= 3
    objects = 0
    for seed in range(8):
        c = client.completions.create(model="glotta-fr-tiny", prompt="Réponse :", max_tokens=60, seed=seed,
                                      extra_body={"response_format": {"type": "json_object"}}).choices[0]
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.text), dict)
            objects += 1
    assert objects >= 1


def test_regex_and_choice_extensions(client):
    out = client.completions.create(model="glotta-fr-tiny", prompt="Code postal :", max_tokens=10, temperature=1,
                                    seed=4, extra_body={"guided_regex": "[0-9]{5}"})
    assert out.choices[0].text.isdigit() and len(out.choices[0].text) == 5
    out = client.completions.create(model="glotta-fr-tiny", prompt="Le film est", max_tokens=10, temperature=1,
                                    seed=4, n=4, extra_body={"guided_choice": [" bon", " mauvais", " moyen"]})
    assert {c.text for c in out.choices} <= {" bon", " mauvais", " moyen"} and len(out.choices) == 4


def test_logit_bias(client):
    plain = client.completions.create(model="glotta-fr-tiny", prompt="Le noyau", max_tokens=5, temperature=0,
                                      logprobs=0)
    first = plain.choices[0].logprobs.tokens[0]
    tok = Tokenizer(REPO / FR)
    first_id = next(i for i in range(tok.vocab_size) if tok.piece(i) == first)
    forced = client.completions.create(model="glotta-fr-tiny", prompt="Le noyau", max_tokens=3, temperature=0,
                                       logit_bias={"1234": 100}, logprobs=0)
    assert forced.choices[0].logprobs.tokens == [tok.piece(1234)] * 3
    banned = client.completions.create(model="glotta-fr-tiny", prompt="Le noyau", max_tokens=5, temperature=0,
                                       logit_bias={str(first_id): -100}, logprobs=0)
    assert first not in banned.choices[0].logprobs.tokens


def test_repetition_penalty_equals_transformers(served, client):
    """vLLM's `repetition_penalty` is transformers' (CTRL's): greedy text equals HF generate with the same penalty."""
    folder, model, _ = served
    tok = AutoTokenizer.from_pretrained(folder)
    prompt = "Le noyau Linux démarre et le noyau"
    ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, repetition_penalty=1.5,
                             eos_token_id=[], pad_token_id=0)[0, len(ids):].tolist()
    out = client.completions.create(model="qwen2", prompt=ids, max_tokens=16, temperature=0,
                                    extra_body={"repetition_penalty": 1.5, "ignore_eos": True})
    assert out.choices[0].text == tok.decode(ref, skip_special_tokens=True)
    plain = client.completions.create(model="qwen2", prompt=ids, max_tokens=16, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert plain.choices[0].text != out.choices[0].text


def test_frequency_and_presence_penalties_follow_their_definition(served, client):
    """OpenAI's definition, applied step by step to the HF model's logits: logit − count·frequency −
    (count > 0)·presence over the tokens generated so far; greedy."""
    folder, model, _ = served
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("Il était une fois une tortue")["input_ids"]
    freq, pres = 0.8, 0.6
    seq, counts, gen = list(ids), {}, []
    with torch.no_grad():
        for _ in range(14):
            logits = model(torch.tensor([seq])).logits[0, -1].numpy().astype(np.float32)
            for t, c in counts.items():
                logits[t] -= c * freq + pres
            nxt = int(logits.argmax())
            gen.append(nxt)
            seq.append(nxt)
            counts[nxt] = counts.get(nxt, 0) + 1
    out = client.completions.create(model="qwen2", prompt=ids, max_tokens=14, temperature=0, frequency_penalty=freq,
                                    presence_penalty=pres, extra_body={"ignore_eos": True})
    assert out.choices[0].text == tok.decode(gen, skip_special_tokens=True)


def test_n_best_of_and_token_prompts(client):
    tok = AutoTokenizer.from_pretrained(REPO / FR)
    ids = tok("Il était une fois")["input_ids"]
    a = client.completions.create(model="glotta-fr-tiny", prompt=ids, max_tokens=8, temperature=1, seed=11, n=3)
    b = client.completions.create(model="glotta-fr-tiny", prompt="Il était une fois", max_tokens=8, temperature=1,
                                  seed=11, n=3)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # token ids and text: the same prompt
    assert len({c.text for c in a.choices}) > 1 and [c.index for c in a.choices] == [0, 1, 2]
    assert a.usage.prompt_tokens == len(ids)  # the prompt counts once, not once per choice
    best = client.completions.create(model="glotta-fr-tiny", prompt="Il était une fois", max_tokens=8,
                                     temperature=1, seed=11, n=1, best_of=3, logprobs=0)
    sums = {c.text: sum(c.logprobs.token_logprobs) for c in client.completions.create(
        model="glotta-fr-tiny", prompt="Il était une fois", max_tokens=8, temperature=1, seed=11, n=3,
        logprobs=0).choices}
    assert best.choices[0].text == max(sums, key=sums.get)
    two = client.completions.create(model="glotta-fr-tiny", prompt=[ids, ids[:2]], max_tokens=2, temperature=0, n=2)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]


def test_grpc_chat_constraints_and_alternatives(served):
    _, _, gw = served
    pb2, pb2_grpc = load_stubs()
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        stub = pb2_grpc.TextGenerationStub(channel)
        out = stub.Chat(pb2.ChatRequest(model="qwen2", messages=[pb2.ChatMessage(**m) for m in MESSAGES],
                                        max_tokens=12, temperature=0, logprobs=3))
        assert len(out.tokens) == out.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in out.tokens)
        streamed = "".join(r.text for r in stub.ChatStream(pb2.ChatRequest(
            model="qwen2", messages=[pb2.ChatMessage(**m) for m in MESSAGES], max_tokens=12, temperature=0)))
        assert streamed == out.text
        gen = stub.Generate(pb2.GenerateRequest(model="glotta-fr-tiny", prompt="Le noyau", max_tokens=4, logprobs=2))
        assert all(len(t.top_logprobs) == 2 for t in gen.tokens)
        js = stub.Generate(pb2.GenerateRequest(model="glotta-fr-tiny", prompt="Réponse :", max_tokens=80, seed=2,
                                               constraint=pb2.Constraint(json_schema=json.dumps(SCHEMA))))
        if js.finish_reason == "stop":
            jsonschema.validate(json.loads(js.text), SCHEMA)
        choice = stub.Generate(pb2.GenerateRequest(model="glotta-fr-tiny", prompt="Le film est", max_tokens=5,
                                                   constraint=pb2.Constraint(
                                                       choice=pb2.ChoiceList(choices=[" bon", " mauvais"]))))
        assert choice.text in (" bon", " mauvais")
        with pytest.raises(grpc.RpcError) as e:
            stub.Generate(pb2.GenerateRequest(model="glotta-fr-tiny", prompt="x",
                                              constraint=pb2.Constraint(regex="(unclosed")))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "guided_regex" in e.value.details()
