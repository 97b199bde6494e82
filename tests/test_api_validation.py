"""`PUT /api` rejects bad requests with a 4xx carrying Megatron's message and the field's name — Megatron's exact text
(megatron/inference/text_generation_server.py), except in the cases the README lists as Glotta's departures."""

import pytest

OK = {"prompts": ["Bonjour"], "tokens_to_generate": 2}

CASES = [
    ({}, "prompts argument required", "prompts"),
    ({"prompts": ["a"], "max_len": 3}, "max_len is no longer used.  Replace with tokens_to_generate", "max_len"),
    ({"sentences": ["a"], "prompts": ["a"]}, "sentences is no longer used.  Replace with prompts", "sentences"),
    ({"prompts": "a"}, "prompts is not a list of strings", "prompts"),
    ({"prompts": [1, 2]}, "prompts is not a list of strings", "prompts"),
    ({"prompts": []}, "prompts is empty", "prompts"),
    ({"prompts": ["a"] * 129}, "Maximum number of prompts is 128", "prompts"),
    ({**OK, "tokens_to_generate": "5"}, "tokens_to_generate must be an integer greater than 0", "tokens_to_generate"),
    ({**OK, "tokens_to_generate": 1.5}, "tokens_to_generate must be an integer greater than 0", "tokens_to_generate"),
    ({**OK, "tokens_to_generate": -1}, "tokens_to_generate must be an integer greater than or equal to 0",
     "tokens_to_generate"),
    ({**OK, "logprobs": "yes"}, "logprobs must be a boolean value", "logprobs"),
    ({**OK, "tokens_to_generate": 0}, "tokens_to_generate=0 implies logprobs should be True", "logprobs"),
    ({**OK, "temperature": 0}, "temperature must be a positive number less than or equal to 100.0", "temperature"),
    ({**OK, "temperature": 100.5}, "temperature must be a positive number less than or equal to 100.0",
     "temperature"),
    ({**OK, "temperature": "hot"}, "temperature must be a positive number less than or equal to 100.0",
     "temperature"),
    ({**OK, "top_k": 1.0}, "top_k must be an integer equal to or greater than 0 and less than or equal to 1000",
     "top_k"),
    ({**OK, "top_k": 1001}, "top_k must be equal to or greater than 0 and less than or equal to 1000", "top_k"),
    ({**OK, "top_p": 1}, "top_p must be a positive float less than or equal to 1.0", "top_p"),
    ({**OK, "top_p": 0.5, "top_k": 5}, "cannot set both top-k and top-p samplings.", "top_p"),
    ({**OK, "top_p": 1.5}, "top_p must be less than or equal to 1.0", "top_p"),
    ({**OK, "top_p_decay": 0.5}, "top_p_decay cannot be set without top_p", "top_p_decay"),
    ({**OK, "top_p": 0.5, "top_p_decay": 2.0}, "top_p_decay must be less than or equal to 1.0", "top_p_decay"),
    ({**OK, "top_p_bound": 0.1}, "top_p_bound cannot be set without top_p", "top_p_bound"),
    ({**OK, "top_p": 0.5, "top_p_bound": 0.7}, "top_p_bound must be greater than 0 and less than top_p",
     "top_p_bound"),
    ({**OK, "add_BOS": 1}, "add_BOS must be a boolean value", "add_BOS"),
    ({"prompts": [""]}, "Empty prompts require add_BOS=true", "add_BOS"),
    ({**OK, "stop_on_eol": "true"}, "stop_on_eol must be a boolean value", "stop_on_eol"),
    ({**OK, "stop_on_double_eol": None}, "stop_on_double_eol must be a boolean value", "stop_on_double_eol"),
    ({**OK, "prevent_newline_after_colon": 0}, "prevent_newline_after_colon must be a boolean value",
     "prevent_newline_after_colon"),
    ({**OK, "random_seed": "42"}, "random_seed must be integer", "random_seed"),
    ({**OK, "random_seed": -5}, "random_seed must be a positive integer", "random_seed"),
    ({**OK, "no_log": "no"}, "no_log must be a boolean value", "no_log"),
    ({**OK, "beam_width": 2}, "Beam search is no longer supported.", "beam_width"),
    ([1, 2], "request body must be a JSON object", "body"),
]


@pytest.mark.parametrize("body,message,param", CASES, ids=[c[1][:40] + f"-{i}" for i, c in enumerate(CASES)])
def test_megatron_messages(http, body, message, param):
    r = http.put("/api", json=body)
    assert r.status_code == 400, r.text
    assert r.json() == {"message": message, "param": param}


def test_first_failure_wins_in_megatron_order(http):
    # Both fields are wrong; Megatron checks tokens_to_generate before temperature.
    r = http.put("/api", json={"prompts": ["a"], "tokens_to_generate": -1, "temperature": -1})
    assert r.json()["param"] == "tokens_to_generate"


def test_too_long_for_the_context(http):
    r = http.put("/api", json={"prompts": ["Bonjour"], "tokens_to_generate": 100000})
    assert r.status_code == 400
    assert r.json()["message"].startswith("Length of prompt + tokens_to_generate longer than allowed")


def test_malformed_json_and_unknown_model(http):
    r = http.put("/api", content=b'{"prompts": ["a"', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["param"] == "body"
    r = http.put("/api", json={"prompts": ["a"], "model": "glotta-xx-tiny"})
    assert r.status_code == 404 and "glotta-xx-tiny" in r.json()["message"]


def test_only_put(http):
    assert http.post("/api", json=OK).status_code == 405


@pytest.mark.parametrize("content_type,status", [
    (None, 200),  # old scripts send none: still read as JSON (a browser cannot send a body without one)
    ("application/json; charset=UTF-8", 200),  # what Megatron's own text_generation_cli sends
    ("application/merge-patch+json", 200),
    # what a web page can send cross-origin without a preflight ("simple requests"): refused, or any page a user
    # visits could spend the server's compute (CSRF); `curl -d` without -H sends the first one
    ("application/x-www-form-urlencoded", 415), ("text/plain", 415), ("multipart/form-data; boundary=x", 415)])
def test_only_json_bodies_are_read(http, content_type, status):
    headers = {} if content_type is None else {"content-type": content_type}
    body = b'{"prompts": ["Bonjour"], "tokens_to_generate": 1}'
    r = http.put("/api", content=body, headers=headers)
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json()["param"] == "Content-Type" and "application/json" in r.json()["message"]
        r = http.post("/v1/completions", content=b'{"prompt": "Le", "max_tokens": 1}', headers=headers)
        assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": "a", "max_tokens": -1}, "max_tokens"),
        ({"prompt": "a", "temperature": -0.5}, "temperature"),
        ({"prompt": "a", "top_p": 0}, "top_p"),
        ({"prompt": "a", "n": 17}, "n"),
        ({"prompt": "a", "n": 3, "best_of": 2}, "best_of"),
        ({"prompt": "a", "suffix": " fin"}, "suffix"),
        ({"prompt": "a", "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"prompt": "a", "logit_bias": {"5": 101}}, "logit_bias"),
        ({"prompt": "a", "logit_bias": {"999999": 1}}, "logit_bias"),
        ({"prompt": "a", "presence_penalty": 2.5}, "presence_penalty"),
        ({"prompt": "a", "repetition_penalty": 0}, "repetition_penalty"),
        ({"prompt": [1, 999999]}, "prompt"),
        ({"prompt": [1, True]}, "prompt"),
        ({"prompt": "a", "response_format": {"type": "json_schema"}}, "response_format"),
        ({"prompt": "a", "guided_regex": "(unclosed"}, "guided_regex"),
        ({"prompt": "a", "guided_json": "{not json"}, "guided_json"),
        ({"prompt": "a", "guided_regex": "a+", "guided_choice": ["a"]}, "guided_choice"),
        ({"prompt": "a", "stream": True, "n": 1, "best_of": 2}, "best_of"),
        ({"prompt": "a", "logprobs": 6}, "logprobs"),
        ({"prompt": [], "max_tokens": 1}, "prompt"),
        ({"max_tokens": 1}, "prompt"),
        ({"prompt": "a", "stop": ["x"] * 17}, "stop"),
    ],
)
def test_openai_validation(http, body, param):
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
