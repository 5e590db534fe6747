"""What a person, a probe or a scraper asks of the service itself: where things are (GET /:
the page for a browser, JSON for everyone else),
whether it lives and serves (/health/live, /health/ready) and its metrics (/metrics)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service import __version__
from service.api import serving_of
from service.errors import NotReady, documented
from service.page import page_response, prefers_html

router = APIRouter()


class ServiceIndex(BaseModel):
    """GET /: where things are, for a person (or a script) that only knows the address."""

    name: str
    version: str
    docs: str
    openapi: str
    models: str
    health: str
    metrics: str


@router.get("/", tags=["meta"], response_model=ServiceIndex,
            responses={200: {"content": {"text/html": {}}, "description": "JSON; a browser gets the page."}})
async def index(request: Request, response: Response) -> ServiceIndex | Response:
    """Where the docs and the main routes are; a browser (Accept ranking text/html above
    JSON) gets the page that shows the variants side by side."""
    if prefers_html(request.headers.get("accept")):
        return page_response()
    response.headers["vary"] = "Accept"
    return ServiceIndex(name="slimserve", version=__version__, docs=request.app.docs_url,
                        openapi=request.app.openapi_url, models="/v1/models", health="/health/ready",
                        metrics="/metrics")


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/health/ready", tags=["health"], responses=documented(NotReady))
async def ready(request: Request) -> dict[str, Any]:
    serving = serving_of(request)
    names = serving.ready_variants()
    if not names:
        raise NotReady("no variant is ready")
    failed = {n: v.reason for n, v in serving.variants.items() if not v.ready}
    return {"status": "ready", "models": names + serving.ready_cascades() + serving.ready_routes(), "failed": failed}


@router.get("/metrics", tags=["metrics"], response_class=PlainTextResponse)
async def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
