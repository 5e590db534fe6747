"""The FastAPI app: routes, the one error handler family, and the lifespan that loads
variants, starts their batchers and stops them again."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__, api_rerank, api_v1, api_v2
from service.api import serving_of
from service.body_limit import BodyLimitMiddleware
from service.errors import (
    Malformed,
    MethodNotAllowed,
    NotFound,
    NotReady,
    ServiceError,
    Unauthorized,
    documented,
    error_response,
    first_error,
    redact,
)
from service.inference import Shadow
from service.metrics import Metrics, MetricsMiddleware
from service.serving import Serving, build_serving
from service.settings import Settings
from variant.backends import Backend, BackendFactory, open_backend
from variant.manifest import Runtime

log = logging.getLogger("slimserve")
# The routes that ask a model for an answer (classify, infer): the ones the metrics time and count.
MODEL_ROUTES = [route for router in (api_v1.router, api_v2.router) for route in router.routes
                if isinstance(route, APIRoute) and "POST" in route.methods and "{name}" in route.path]
# The text of the ready line's example request: no apostrophe, so it sits in single quotes.
EXAMPLE_TEXT = "a charming and often affecting journey"


class ServiceIndex(BaseModel):
    """GET /: where things are, for a person (or a script) that only knows the address."""

    name: str
    version: str
    docs: str
    openapi: str
    models: str
    health: str
    metrics: str


def backends(settings: Settings) -> BackendFactory:
    """The default backends: each variant on the runtime its manifest records (or the
    settings' override), all under one thread budget for the whole process, kept across
    reloads, so old and new sessions share the cores."""
    limiter = threading.BoundedSemaphore(settings.concurrent_runs())

    def backend_of(path: Path, recorded: Runtime) -> Backend:
        return open_backend(path, settings.runtime_for(recorded), settings.session_threads(), limiter,
                            settings.execution_provider)

    return backend_of


def publish_variant(metrics: Metrics, serving: Serving, name: str) -> None:
    variant = serving.variants[name]
    metrics.model_ready.labels(name).set(1 if variant.ready else 0)
    opened = variant.opened
    if opened is None:
        return
    m = opened.manifest
    metrics.model_parameters.labels(name).set(m.parameters)
    metrics.model_onnx_bytes.labels(name).set(m.onnx_bytes)
    metrics.model_memory_bytes.labels(name).set(opened.memory_bytes)
    metrics.model_load_seconds.labels(name).set(opened.load_seconds)
    metrics.model_warmup_seconds.labels(name).set(opened.warmup_seconds)
    metrics.publish_accuracy(name, m)
    quantization = str(m.settings.get("quantize") or "none")
    runtime = opened.backend.runtime
    metrics.model_info.labels(name, m.method, m.base_model, quantization, runtime.backend, runtime.precision).set(1)


def validation_message(exc: RequestValidationError) -> str:
    """One line naming the offending field, e.g. `inputs.0: Input should be a valid string`."""
    errors = exc.errors()
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}"
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in ("model_attributes_type", "dict_type"):
        return "request body must be a JSON object (send content-type: application/json)"
    return first_error(errors, skip=api_v1.UNION_BRANCHES)


def publish_serving(metrics: Metrics, serving: Serving, previous: Serving | None = None) -> None:
    """Gauges for the variants now served; a variant a reload removed stops reporting."""
    if previous is not None:
        for name in set(previous.variants) - set(serving.variants):
            for gauge in (metrics.model_ready, metrics.model_parameters, metrics.model_onnx_bytes,
                          metrics.model_memory_bytes, metrics.model_load_seconds, metrics.model_warmup_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
        metrics.model_info.clear()
        metrics.model_accuracy.clear()
    for name in serving.variants:
        publish_variant(metrics, serving, name)


def check_shadow(settings: Settings, serving: Serving) -> None:
    """One warning when shadow sampling is asked for but has nothing to mirror to."""
    if settings.shadow_rate <= 0:
        return
    reference = serving.reference(settings.reference)
    if reference is None:
        log.warning("shadow_rate is %s but there is no reference (set SLIMSERVE_REFERENCE or serve an "
                    "uncompressed variant, method 'none'): shadow sampling is off", settings.shadow_rate)
    elif reference not in serving.ready_variants():
        log.warning("shadow_rate is %s but the reference %r is not a ready variant: nothing is mirrored",
                    settings.shadow_rate, reference)


def ready_message(app: FastAPI, url: str) -> str:
    """The line a person who started the service waits for: where it answers, and one
    request to paste, naming the reference variant when it serves, else the first ready one."""
    serving: Serving = app.state.serving
    ready = serving.ready_variants()
    if not ready:
        return f"slimserve up on {url} but no variant is ready; see: curl -s {url}/v1/models"
    reference = serving.reference(app.state.settings.reference)
    name = reference if reference in ready else ready[0]
    body = json.dumps({"inputs": [EXAMPLE_TEXT]})
    return (f"slimserve ready on {url} with {len(ready)} variant(s); try: curl -s {url}/v1/models/{name}/classify "
            f"-H 'content-type: application/json' -d '{body}'")


async def watch_folders(app: FastAPI, interval: float, reload_lock: asyncio.Lock) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            async with reload_lock:  # a reload swapping the set meanwhile would get stale gauges
                serving: Serving = app.state.serving
                for name in await serving.retire_vanished():
                    publish_variant(app.state.metrics, serving, name)
        except Exception:  # keep watching: one bad pass (a folder we may not read) is logged
            log.exception("checking the models folder failed")


def create_app(settings: Settings | None = None, backend_of: BackendFactory | None = None) -> FastAPI:
    """The service over `settings.models`; `backend_of` loads each variant's model.onnx
    (default: the runtime its manifest records, or the settings' override, under the
    settings' thread budget and execution provider)."""
    settings = settings or Settings()
    backend_of = backend_of or backends(settings)
    metrics = Metrics()
    reload_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serving = await build_serving(settings, metrics, backend_of)
        app.state.serving = serving
        app.state.shadow = Shadow(settings.shadow_rate, settings.reference, metrics, settings.multi_label_threshold)
        publish_serving(metrics, serving)
        ready = serving.ready_variants()
        check_shadow(settings, serving)
        log.info("serving %d variant(s) from %s: %s", len(ready), settings.models, ", ".join(ready) or "none")
        watcher = (asyncio.create_task(watch_folders(app, settings.watch_seconds, reload_lock))
                   if settings.watch_seconds else None)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await app.state.shadow.drain()
            await app.state.serving.stop()

    app = FastAPI(title="slimserve", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.serving = Serving({})
    app.include_router(api_v1.router)
    app.include_router(api_rerank.router)
    app.include_router(api_v2.router)
    # The last added runs first: the metrics see every answer, the body limit's 413s too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=MODEL_ROUTES,
                       is_known=lambda name: app.state.serving.knows(name))

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(Malformed(validation_message(exc)), request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, never the client's input: still JSON, and logged with its trace.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ServiceError(f"internal error: {type(exc).__name__}"), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals: no route, wrong method, or a body it could not decode.
        message = str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):
            message = f"request body is not UTF-8: {exc.__cause__.reason} at byte {exc.__cause__.start}"
        elif exc.__cause__ is not None:  # e.g. a number with more digits than Python converts
            message = f"request body could not be parsed: {str(exc.__cause__).splitlines()[0]}"
        error = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code, Malformed)(message)
        return error_response(error, request.url.path)

    @app.get("/", tags=["meta"], response_model=ServiceIndex)
    async def index() -> ServiceIndex:
        """Where the docs and the main routes are."""
        return ServiceIndex(name="slimserve", version=__version__, docs=app.docs_url, openapi=app.openapi_url,
                            models="/v1/models", health="/health/ready", metrics="/metrics")

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"], responses=documented(NotReady))
    async def ready(request: Request) -> dict[str, Any]:
        serving = serving_of(request)
        names = serving.ready_variants()
        if not names:
            raise NotReady("no variant is ready")
        failed = {n: v.reason for n, v in serving.variants.items() if not v.ready}
        return {"status": "ready", "models": names + serving.ready_cascades(), "failed": failed}

    @app.get("/metrics", tags=["metrics"], response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["admin"], responses=documented(Unauthorized, NotFound, NotReady))
    async def reload(request: Request, authorization: str | None = Header(None)) -> dict[str, Any]:
        """Load the models folder again and swap it in; requests in flight finish on the old set."""
        token = settings.admin_token
        if token is None:
            raise NotFound("admin routes are off (set SLIMSERVE_ADMIN_TOKEN to enable them)")
        given = (authorization or "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, token.get_secret_value().encode()):
            raise Unauthorized("admin routes need 'Authorization: Bearer <SLIMSERVE_ADMIN_TOKEN>'")
        async with reload_lock:
            old = serving_of(request)
            try:
                new = await build_serving(settings, metrics, backend_of)
            except OSError as exc:  # the models folder went away: keep serving what is loaded
                log.warning("reload failed, still serving the previous set: %s", exc)
                raise NotReady("reload failed, still serving the previous set: "
                               f"{redact(str(exc), settings.models)}") from None
            request.app.state.serving = new
            publish_serving(metrics, new, old)
            check_shadow(settings, new)
            await old.stop()
        return {"status": "reloaded", "models": {n: v.state for n, v in new.variants.items()},
                "cascades": new.ready_cascades()}

    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.app:app` builds the app from SLIMSERVE_* variables on first access,
    # so importing this module has no side effects.
    if name == "app":
        return create_app()
    raise AttributeError(name)
