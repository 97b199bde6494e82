"""The API's documentation pages (Swagger UI, ReDoc): FastAPI's, with a Content-Security-Policy. They load their
script from the jsDelivr CDN, so they need a network; the schema itself is `/openapi.json`, served here."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from .csp import csp_for_html

router = APIRouter(include_in_schema=False)
CDN = ("https://cdn.jsdelivr.net",)


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode()
    response.headers["Content-Security-Policy"] = csp_for_html(
        html, script_sources=CDN, style_sources=(*CDN, "https://fonts.googleapis.com"),
        img_sources=("https://fastapi.tiangolo.com", "https://cdn.redoc.ly"))
    return response


@router.get("/docs")
async def swagger() -> HTMLResponse:
    return _page(get_swagger_ui_html(openapi_url="/openapi.json", title="Glotta gateway"))


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return _page(get_redoc_html(openapi_url="/openapi.json", title="Glotta gateway"))
