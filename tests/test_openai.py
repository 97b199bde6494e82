"""`/v1/completions` and `/v1/models` through raw HTTP (SSE format) and the official `openai` client."""

import json

import openai
import pytest

PROMPT = "Le noyau Linux"


@pytest.fixture()
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused")


def test_sse_format(http):
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    events = events[:-1]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "text_completion" for c in chunks)
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
    text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    full = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0}).json()
    assert text == full["choices"][0]["text"]


def test_stream_rejects_before_headers(http):
    r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 100000, "stream": True})
    assert r.status_code == 400
    assert "longer than allowed" in r.json()["error"]["message"]


def test_openai_client_round_trip(client):
    models = [m.id for m in client.models.list()]
    assert models and "glotta-fr-tiny" in models
    r = client.completions.create(model="glotta-fr-tiny", prompt=PROMPT, max_tokens=10, temperature=0)
    assert r.object == "text_completion" and r.model == "glotta-fr-tiny"
    assert r.usage.completion_tokens == 10 and r.usage.total_tokens == r.usage.prompt_tokens + 10
    streamed = "".join(
        ev.choices[0].text
        for ev in client.completions.create(
            model="glotta-fr-tiny", prompt=PROMPT, max_tokens=10, temperature=0, stream=True
        )
    )
    assert streamed == r.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="glotta-fr-tiny", prompt=PROMPT, max_tokens=-3)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt=PROMPT, max_tokens=3)


def test_prompt_list_gives_one_choice_each(client):
    r = client.completions.create(model="glotta-es-tiny", prompt=["El sistema", "La"], max_tokens=5, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    single = client.completions.create(model="glotta-es-tiny", prompt="La", max_tokens=5, temperature=0)
    assert r.choices[1].text == single.choices[0].text


def test_echo_and_logprobs(client):
    r = client.completions.create(
        model="glotta-fr-tiny", prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=2
    )
    c = r.choices[0]
    assert c.text.startswith(PROMPT)
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text
    assert lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(lp.tokens)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    # greedy: each generated token is the most likely one at its position
    for tok, tops in list(zip(lp.tokens, lp.top_logprobs))[-4:]:
        assert len(tops) == 2 and max(tops, key=tops.get) == tok


def test_scoring_through_echo_and_zero_tokens(client):
    r = client.completions.create(model="glotta-fr-tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    c = r.choices[0]
    assert c.text == PROMPT and r.usage.completion_tokens == 0
    assert all(x < 0 for x in c.logprobs.token_logprobs[1:])
