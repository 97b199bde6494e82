"""Few-shot prompt templates: one YAML file per task and language, validated when the gateway starts.

A template holds an instruction, labelled examples for k-shot prompts, the input pattern (Jinja, with one answer slot
`{{ answer }}`), and for classification a verbalizer (label → answer words). Rendering a k-shot prompt writes
the instruction, k examples with their answers, then the query cut just before its answer slot:

    Critique : Un film magnifique. Le film est génial.      ← example (answer from the verbalizer)
    Critique : Je me suis ennuyé. Le film est               ← query, cut at its answer slot: the model continues
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import jinja2
import jinja2.meta
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_SLOT = "\x00ANSWER\x00"


class TemplateError(ValueError):
    """A template file that cannot be used: names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, str]
    label: str | None = None  # classification
    answer: str | None = None  # generation (translation, summary, fact)


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    task: str
    language: str
    description: str = ""
    mode: Literal["score", "generate"]
    instruction: str = ""
    pattern: str = Field(description="Jinja: one example; `{{ answer }}` is the answer slot (the query stops there)")
    paraphrases: list[str] = Field(default_factory=list, description="other patterns for the same task")
    separator: str = "\n"
    inputs: list[str]
    verbalizer: dict[str, list[str]] | None = None
    examples: list[Example] = Field(default_factory=list)
    max_tokens: int = Field(16, ge=1, le=512)
    stop: list[str] = Field(default_factory=lambda: ["\n"])

    @field_validator("pattern", "paraphrases")
    @classmethod
    def _compiles(cls, v):
        for p in [v] if isinstance(v, str) else v:
            ast = _ENV.parse(p)
            names = jinja2.meta.find_undeclared_variables(ast)
            if "answer" not in names:
                raise ValueError(f"pattern {p!r} has no {{{{ answer }}}} slot")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Template":
        for p in [self.pattern, *self.paraphrases]:
            used = jinja2.meta.find_undeclared_variables(_ENV.parse(p)) - {"answer"}
            if used != set(self.inputs):
                raise ValueError(f"pattern {p!r} uses {sorted(used)} but inputs are {sorted(self.inputs)}")
            rendered = _ENV.from_string(p).render(answer=_SLOT, **{k: "x" for k in self.inputs})
            if rendered.count(_SLOT) != 1:
                raise ValueError(f"pattern {p!r}: the answer slot must appear exactly once")
        if self.mode == "score" and not self.verbalizer:
            raise ValueError("a score-mode template needs a verbalizer (label → answer words)")
        for i, ex in enumerate(self.examples):
            if set(ex.inputs) != set(self.inputs):
                raise ValueError(f"example {i} has inputs {sorted(ex.inputs)}, expected {sorted(self.inputs)}")
            if self.verbalizer is not None and ex.label not in self.verbalizer:
                raise ValueError(f"example {i}: label {ex.label!r} is not in the verbalizer")
            if self.verbalizer is None and ex.answer is None:
                raise ValueError(f"example {i} needs an answer")
        return self

    @property
    def labels(self) -> list[str]:
        return list(self.verbalizer or {})

    def patterns(self) -> list[str]:
        return [self.pattern, *self.paraphrases]

    def render(self, inputs: dict[str, str], k: int = 0, example_ids: list[int] | None = None,
               paraphrase: int = 0) -> str:
        """The k-shot prompt for `inputs`, ending where the model's answer starts."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise KeyError(missing[0])
        if not 0 <= paraphrase < len(self.patterns()):
            raise IndexError(f"paraphrase must be in 0..{len(self.patterns()) - 1}")
        ids = list(range(min(k, len(self.examples)))) if example_ids is None else example_ids
        if any(not 0 <= i < len(self.examples) for i in ids):
            raise IndexError(f"example ids must be in 0..{len(self.examples) - 1}")
        if example_ids is None and k > len(self.examples):
            raise IndexError(f"k={k} but the template has {len(self.examples)} examples")
        tmpl = _ENV.from_string(self.patterns()[paraphrase])
        parts = [self.instruction] if self.instruction else []
        for i in ids:
            ex = self.examples[i]
            answer = self.verbalizer[ex.label][0] if self.verbalizer else ex.answer
            parts.append(tmpl.render(answer=answer, **ex.inputs).rstrip("\n"))
        query = tmpl.render(answer=_SLOT, **{n: inputs[n] for n in self.inputs})
        parts.append(query[: query.index(_SLOT)].rstrip(" "))
        return self.separator.join(parts)


def load_file(path: Path) -> Template:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise TemplateError(path, f"cannot read YAML: {e}") from None
    if not isinstance(data, dict):
        raise TemplateError(path, "a template file holds one mapping")
    try:
        tmpl = Template(**data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "template"
        raise TemplateError(path, f"{where}: {err['msg']}") from None
    except TypeError as e:
        raise TemplateError(path, str(e)) from None
    if tmpl.name != path.stem:
        raise TemplateError(path, f"name {tmpl.name!r} must match the file name {path.stem!r}")
    return tmpl


BUILTIN = Path(__file__).with_name("builtin")


def load_library(*dirs: Path | str) -> dict[str, Template]:
    """The built-in templates plus those of `dirs` (a user's template overrides a built-in of the same name)."""
    library: dict[str, Template] = {}
    for d in (BUILTIN, *map(Path, dirs)):
        if not d.is_dir():
            raise TemplateError(d, "template directory not found")
        for path in sorted(d.glob("*.yaml")):
            library[path.stem] = load_file(path)
    return library
