"""HTTP wiring of the prompt-template library: list, show, run."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...errors import ApiError
from ...templates.library import Template
from ...templates.runner import run
from .protocol import TemplateList, TemplateRunRequest, TemplateRunResponse, TemplateSummary

router = APIRouter(prefix="/v1/templates", tags=["templates"])


def _get(request: Request, name: str) -> Template:
    template = request.app.state.templates.get(name)
    if template is None:
        raise ApiError(404, f"template `{name}` not found", "name", "not_found_error")
    return template


def _summary(t: Template) -> TemplateSummary:
    return TemplateSummary(name=t.name, task=t.task, language=t.language, mode=t.mode, description=t.description,
                           inputs=t.inputs, labels=t.labels, examples=len(t.examples), paraphrases=len(t.paraphrases))


@router.get("", response_model=TemplateList)
async def list_templates(request: Request) -> TemplateList:
    return TemplateList(data=[_summary(t) for t in request.app.state.templates.values()])


@router.get("/{name}", response_model=Template)
async def show_template(name: str, request: Request) -> Template:
    return _get(request, name)


@router.post("/{name}/run", response_model=TemplateRunResponse)
async def run_template(name: str, body: TemplateRunRequest, request: Request) -> TemplateRunResponse:
    """Render the k-shot prompt and answer it: `generate` (cut at the stop) or `score` (rank the labels)."""
    template = _get(request, name)
    engine = request.app.state.models.get(body.model)
    missing = [n for n in template.inputs if n not in body.inputs]
    if missing:
        raise ApiError(422, f"missing input `{missing[0]}` (template {name} needs {template.inputs})",
                       f"inputs.{missing[0]}")
    extra = sorted(set(body.inputs) - set(template.inputs))
    if extra:
        raise ApiError(422, f"unknown input `{extra[0]}` (template {name} takes {template.inputs})", f"inputs.{extra[0]}")
    for key, value in body.inputs.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, f"input `{key}` is not valid Unicode text (lone surrogate)", f"inputs.{key}") from None
    if body.paraphrase >= len(template.patterns()):
        raise ApiError(422, f"paraphrase must be below {len(template.patterns())}", "paraphrase")
    ids = body.examples
    if ids is not None and any(not 0 <= i < len(template.examples) for i in ids):
        raise ApiError(422, f"example indices must be in 0..{len(template.examples) - 1}", "examples")
    if ids is None and body.k > len(template.examples):
        raise ApiError(422, f"k={body.k} but template {name} has {len(template.examples)} examples", "k")
    mode = body.mode or template.mode
    if mode == "score" and not template.verbalizer:
        raise ApiError(422, f"template {name} has no verbalizer: use mode generate", "mode")
    out = await run(engine, template, body.inputs, body.k, ids, mode, body.paraphrase, body.max_tokens)
    return TemplateRunResponse(template=name, model=engine.name, mode=mode, prompt=out.prompt, answer=out.answer,
                               label=out.label, scores=out.scores or None)
