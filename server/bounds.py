"""The bounds on what one request may carry: every list and string a client can send, decided before any work.

These are fixed caps of the API (the operator's knobs — body size, rows in flight, timeouts — are `Limits`, in
limits.py). Each is enforced where the request is parsed, with a 400 that names the field and the bound, so that no
request makes the gateway render, tokenize or hold more than these allow. The README's table ("Bounds") and
docs/security.md list them; a test holds the table to these values.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED_MAX = 2**64 - 1  # seeds are unsigned 64-bit at every entry: /api, /v1, gRPC and Triton's UINT64 `seed`
MAX_PROMPTS = 128  # prompts per request (/api `prompts`, /v1 `prompt` as a list)
MAX_STOP_STRINGS = 16  # stop strings per request
MAX_STOP_CHARS = 256  # characters per stop string: the held-back check is linear in this, per token
MAX_TOP_LOGPROBS = 5  # alternatives per token (OpenAI's own cap for completions)
MAX_LOGIT_BIAS = 300  # tokens in a `logit_bias` map
MAX_CHOICES = 16  # completions per prompt (`n`, `best_of`): each is a row
MAX_CONSTRAINT_CHARS = 65_536  # characters of a JSON schema, regex, choice list or grammar
MAX_CHAT_MESSAGES = 256  # messages in one chat request
MAX_TEMPLATE_EXAMPLES = 32  # a template run's `k`, and its `examples` list
MAX_TEMPLATE_INPUT_CHARS = 16_384  # characters per template input value
MAX_TEMPLATE_TOKENS = 512  # a template run's `max_tokens`


@dataclass(frozen=True)
class Bound:
    name: str
    value: int
    fields: str  # the wire fields it applies to


def table() -> list[Bound]:
    """The bounds as the README and docs/security.md list them."""
    return [
        Bound("prompts per request", MAX_PROMPTS, "`/api` `prompts`, `/v1` `prompt` (list)"),
        Bound("stop strings per request", MAX_STOP_STRINGS, "`/v1` `stop`, gRPC `stop`"),
        Bound("characters per stop string", MAX_STOP_CHARS, "`/v1` `stop`, gRPC `stop`"),
        Bound("log-prob alternatives per token", MAX_TOP_LOGPROBS, "`/v1` `logprobs`, gRPC `logprobs`"),
        Bound("tokens in a logit_bias", MAX_LOGIT_BIAS, "`/v1` `logit_bias`, gRPC `logit_bias`"),
        Bound("completions per prompt", MAX_CHOICES, "`/v1` `n`, `best_of`"),
        Bound("characters of a structured-output constraint", MAX_CONSTRAINT_CHARS,
              "`response_format` schema, `guided_json`, `guided_regex`, `guided_choice`"),
        Bound("messages per chat request", MAX_CHAT_MESSAGES, "`/v1/chat/completions` `messages`"),
        Bound("template examples shown", MAX_TEMPLATE_EXAMPLES, "templates `k`, `examples`"),
        Bound("characters per template input", MAX_TEMPLATE_INPUT_CHARS, "templates `inputs` values"),
        Bound("tokens of a template answer", MAX_TEMPLATE_TOKENS, "templates `max_tokens`"),
    ]


def prompt_fits(chars: int, max_context: int, max_token_chars: int) -> bool:
    """False when a text of `chars` characters certainly holds more tokens than the context: no token covers more
    than `max_token_chars` characters, so such a text is refused before tokenizing megabytes."""
    return chars <= max_context * max_token_chars
