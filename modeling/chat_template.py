"""A model's chat template: found where transformers finds it, rendered as `apply_chat_template` renders it.

Where (transformers 5, tokenization_utils_base.py `_from_pretrained`: separate files take priority over the
config): `chat_template.jinja`, else `chat_template.json` (`{"chat_template": ...}`), else tokenizer_config.json's
`chat_template` (a string, or a list of named templates of which `default` is used).

How (transformers' utils/chat_template_utils.py): Jinja's ImmutableSandboxedEnvironment — chat templates come
from the Hub and are untrusted code — with `trim_blocks` and `lstrip_blocks`, the loop-control extension, a
`tojson` filter that does not escape HTML, `raise_exception` and `strftime_now`, namespaces that refuse
underscore-prefixed names; the variables are the messages, `add_generation_prompt` and the tokenizer's named special
tokens (`bos_token`, `eos_token`, ...). The rendered text is tokenized without adding special tokens (the template
writes them), as `apply_chat_template(tokenize=True)` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from glotta.core.errors import invalid


def find_template(folder: str | Path) -> str | None:
    """The folder's chat template, or None."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, list):  # named templates: the default one
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"),
                         None)
        if isinstance(value, str) and value:
            return value
    return None


@lru_cache(maxsize=32)
def _compile(source: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker): renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        def __setitem__(self, name, value):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")
            super().__setitem__(name, value)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f),
                       namespace=Namespace)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise invalid(f"chat template: line {e.lineno}: {e.message}", "chat_template") from None


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token, ... (their text)
    origin: str = ""  # where it was read, for messages

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """The prompt text of a conversation; a template that refuses it (raise_exception) is a 400 with its words."""
        import jinja2

        template = _compile(self.source)
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   **{**self.special_tokens, **kwargs})
        except jinja2.exceptions.SecurityError as e:
            raise invalid(f"chat template ({self.origin}) tried something its sandbox forbids: {e}",
                          "messages") from None
        except jinja2.exceptions.TemplateError as e:
            raise invalid(f"chat template ({self.origin}): {e}", "messages") from None

    @classmethod
    def from_folder(cls, folder: str | Path, special_tokens: dict[str, str]) -> "ChatTemplate | None":
        source = find_template(folder)
        return None if source is None else cls(source, special_tokens, str(folder))

    @classmethod
    def from_file(cls, path: str | Path, special_tokens: dict[str, str]) -> "ChatTemplate":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise invalid(f"--chat-template {path}: cannot read it ({e})", "chat_template") from None
        _compile(text)  # a syntax error names the file's line now, not at the first request
        return cls(text, special_tokens, str(path))
