"""The FastAPI app: routes, the one error handler family, and the lifespan that loads variants."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import api_v1
from service.errors import Malformed, MethodNotAllowed, ModelNotFound, NotReady, ServiceError
from service.metrics import Metrics, MetricsMiddleware
from service.repository import Variant, load_repository
from service.settings import Settings

log = logging.getLogger("slimserve")


def publish_variant(metrics: Metrics, variant: Variant) -> None:
    metrics.model_ready.labels(variant.name).set(1 if variant.state == "ready" else 0)
    if variant.manifest is None:
        return
    m = variant.manifest
    metrics.model_parameters.labels(variant.name).set(m.parameters)
    metrics.model_onnx_bytes.labels(variant.name).set(m.onnx_bytes)
    metrics.model_memory_bytes.labels(variant.name).set(variant.memory_bytes)
    metrics.model_load_seconds.labels(variant.name).set(variant.load_seconds)
    quantization = str(m.settings.get("quantize") or "none")
    metrics.model_info.labels(variant.name, m.method, m.base_model, quantization).set(1)


def validation_message(exc: RequestValidationError) -> str:
    """One line naming the offending field, e.g. `inputs.0: Input should be a valid string`."""
    errors: list[dict[str, Any]] = exc.errors()
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}"
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in ("model_attributes_type", "dict_type"):
        return "request body must be a JSON object (send content-type: application/json)"
    # A union (text or {text, text_pair}) reports one error per branch, each under the
    # branch's name; the deepest one is the branch the client meant.
    deepest = max(errors, key=lambda e: len(e.get("loc", ())))
    parts = [str(p) for p in deepest.get("loc", ()) if p != "body" and p not in api_v1.UNION_BRANCHES]
    message = deepest.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{'.'.join(parts) or 'body'}: {message}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limiter = threading.BoundedSemaphore(settings.concurrent_runs())
        repository = await run_in_threadpool(load_repository, settings.models, settings.session_threads(), limiter)
        app.state.repository = repository
        for variant in repository.values():
            publish_variant(metrics, variant)
        ready = [v.name for v in repository.values() if v.state == "ready"]
        log.info("serving %d variant(s) from %s: %s", len(ready), settings.models, ", ".join(ready) or "none")
        yield

    app = FastAPI(title="slimserve", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.repository = {}
    app.add_middleware(MetricsMiddleware, metrics=metrics, is_known=lambda name: name in app.state.repository)
    app.include_router(api_v1.router)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await service_error(request, Malformed(validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals: no route, wrong method, or a body it could not decode.
        error = {404: ModelNotFound, 405: MethodNotAllowed}.get(exc.status_code, Malformed)(str(exc.detail))
        return await service_error(request, error)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"])
    async def ready(request: Request) -> dict[str, Any]:
        variants = request.app.state.repository.values()
        names = [v.name for v in variants if v.state == "ready"]
        if not names:
            raise NotReady("no variant is ready")
        return {"status": "ready", "models": names}

    @app.get("/metrics", tags=["metrics"])
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.app:app` builds the app from SLIMSERVE_* variables on first access,
    # so importing this module has no side effects.
    if name == "app":
        return create_app()
    raise AttributeError(name)
