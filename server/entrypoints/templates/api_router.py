"""HTTP wiring of the prompt-template library: list, show, run."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...templates.library import Template
from .protocol import TemplateList, TemplateRunRequest, TemplateRunResponse
from .serving import find, run_template, summary

router = APIRouter(prefix="/v1/templates", tags=["templates"])


@router.get("", response_model=TemplateList)
async def list_templates(request: Request) -> TemplateList:
    return TemplateList(data=[summary(t) for t in request.app.state.templates.values()])


@router.get("/{name}", response_model=Template)
async def show_template(name: str, request: Request) -> Template:
    return find(request.app.state.templates, name)


@router.post("/{name}/run", response_model=TemplateRunResponse)
async def run(name: str, body: TemplateRunRequest, request: Request) -> TemplateRunResponse:
    """Render the k-shot prompt and answer it: `generate` (cut at the stop) or `score` (rank the labels)."""
    template = find(request.app.state.templates, name)
    return await run_template(request.app.state.models.get(body.model), template, body)
