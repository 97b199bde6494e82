"""Template runs: the request checked against the template (each mistake a 400 naming the field), then answered."""

from __future__ import annotations

from glotta.core.errors import invalid, not_found

from ...engine.interface import Engine
from ...templates.library import Template
from ...templates.runner import run
from .protocol import TemplateRunRequest, TemplateRunResponse, TemplateSummary


def find(templates: dict[str, Template], name: str) -> Template:
    template = templates.get(name)
    if template is None:
        raise not_found(f"template `{name}` not found", "name")
    return template


def summary(t: Template) -> TemplateSummary:
    return TemplateSummary(name=t.name, task=t.task, language=t.language, mode=t.mode, description=t.description,
                           inputs=t.inputs, labels=t.labels, examples=len(t.examples), paraphrases=len(t.paraphrases))


def _check(template: Template, body: TemplateRunRequest) -> str:
    """The mode to run in, once the request fits the template."""
    name = template.name
    missing = [n for n in template.inputs if n not in body.inputs]
    if missing:
        raise invalid(f"missing input `{missing[0]}` (template {name} needs {template.inputs})", f"inputs.{missing[0]}")
    extra = sorted(set(body.inputs) - set(template.inputs))
    if extra:
        raise invalid(f"unknown input `{extra[0]}` (template {name} takes {template.inputs})", f"inputs.{extra[0]}")
    if body.paraphrase >= len(template.patterns()):
        raise invalid(f"paraphrase must be below {len(template.patterns())}", "paraphrase")
    ids = body.examples
    if ids is not None and any(not 0 <= i < len(template.examples) for i in ids):
        raise invalid(f"example indices must be in 0..{len(template.examples) - 1}", "examples")
    if ids is None and body.k > len(template.examples):
        raise invalid(f"k={body.k} but template {name} has {len(template.examples)} examples", "k")
    mode = body.mode or template.mode
    if mode == "score" and not template.verbalizer:
        raise invalid(f"template {name} has no verbalizer: use mode generate", "mode")
    return mode


async def run_template(engine: Engine, template: Template, body: TemplateRunRequest) -> TemplateRunResponse:
    mode = _check(template, body)
    rows = sum(map(len, template.verbalizer.values())) if mode == "score" else 1  # score: one row per answer word
    with engine.admit(rows):
        out = await run(engine, template, body.inputs, body.k, body.examples, mode, body.paraphrase, body.max_tokens)
    return TemplateRunResponse(template=template.name, model=engine.name, mode=mode, prompt=out.prompt,
                               answer=out.answer, label=out.label, scores=out.scores or None)
