"""The playground: one self-contained page (no CDN, nothing fetched from outside) that the gateway serves itself,
built on the public API only (/v1/models, /v1/completions with SSE, /v1/templates)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

from ..csp import csp_for_html

router = APIRouter(tags=["playground"])
PAGE = files(__package__).joinpath("playground.html").read_text(encoding="utf-8")
# the page's own inline script (by its hash) and nothing else: no other script runs, nothing is framed or fetched
# but from this server
HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": csp_for_html(PAGE)}


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/playground", status_code=307)


@router.get("/playground", response_class=HTMLResponse)
async def playground() -> HTMLResponse:
    """Try the served models and the few-shot templates in a browser: streamed text coloured by token probability."""
    return HTMLResponse(PAGE, headers=HEADERS)
