"""The FastAPI app: the lifespan that loads the variants, starts their batchers and stops
them again, and the routers (health, admin, models) under one error handler family."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from service import (
    __version__,
    api_admin,
    api_feedback,
    api_health,
    api_rerank,
    api_routes,
    api_stats,
    api_v1,
    api_v2,
    errors,
    keys,
)
from service.api import ModelRoute
from service.body_limit import BodyLimitMiddleware
from service.feedback import Feedback
from service.inference import Inference, Shadow
from service.metrics import Metrics, MetricsMiddleware
from service.serving import Loader, Serving
from service.settings import Settings
from variant import heads
from variant.backends import Backend, BackendFactory, ThreadBudget, open_backend
from variant.manifest import Runtime

log = logging.getLogger("slimserve")
ROUTERS = (api_v1.router, api_rerank.router, api_feedback.router, api_v2.router, api_health.router, api_admin.router,
           api_stats.router, api_routes.router)
# The texts of the ready line's example request: no apostrophe, so they sit in single quotes.
EXAMPLE_TEXT = "a charming and often affecting journey"
EXAMPLE_PAIR = {"text": "is the journey worth taking", "text_pair": EXAMPLE_TEXT}


def backends(settings: Settings) -> BackendFactory:
    """The default backends: each variant on the runtime its manifest records (or the
    settings' override), all under one thread budget for the whole process, kept across
    reloads, so old and new sessions share the cores."""
    limiter = ThreadBudget(settings.threads)

    def backend_of(path: Path, recorded: Runtime) -> Backend:
        runtime = settings.runtime_for(recorded)
        return open_backend(path, runtime, settings.parallel_runs(runtime), limiter, settings.execution_provider)

    return backend_of


def ready_message(app: FastAPI, url: str) -> str:
    """The line a person who started the service waits for: where it answers, and one
    request to paste, naming the reference variant when it serves, else the first ready one."""
    serving: Serving = app.state.serving
    ready = serving.ready_variants()
    if not ready:
        return f"slimserve up on {url} but no variant is ready; see: curl -s {url}/v1/models"
    reference = serving.reference(app.state.settings.reference)
    name = reference if reference in ready else ready[0]
    variant = serving.variants[name]
    # Nothing records whether a model was trained on pairs; a head with one relevance
    # output (a regression or one sigmoid label) is a cross-encoder scoring a pair.
    pairs = len(variant.labels) == 1 and heads.relevance(variant.task, 1) is not None
    body = json.dumps({"inputs": [EXAMPLE_PAIR if pairs else EXAMPLE_TEXT]})
    return (f"slimserve ready on {url} with {len(ready)} variant(s); try: curl -s {url}/v1/models/{name}/classify "
            f"-H 'content-type: application/json' -d '{body}'")


async def watch_folders(app: FastAPI, interval: float) -> None:
    loader: Loader = app.state.loader
    while True:
        await asyncio.sleep(interval)
        try:
            async with loader.lock:  # a reload swapping the set meanwhile would get stale gauges
                serving: Serving = app.state.serving
                for name in await serving.retire_vanished():
                    app.state.metrics.publish_variant(serving.variants[name])
        except Exception:  # keep watching: one bad pass (a folder we may not read) is logged
            log.exception("checking the models folder failed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.serving = serving = await app.state.loader.load()
    ready = serving.ready_variants()
    log.info("serving %d variant(s) from %s: %s", len(ready), settings.models, ", ".join(ready) or "none")
    watcher = asyncio.create_task(watch_folders(app, settings.watch_seconds)) if settings.watch_seconds else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await app.state.shadow.drain()
        await app.state.serving.stop()


def create_app(settings: Settings | None = None, backend_of: BackendFactory | None = None) -> FastAPI:
    """The service over `settings.models`; `backend_of` loads each variant's model.onnx
    (default: the runtime its manifest records, or the settings' override, under the
    settings' thread budget and execution provider)."""
    settings = settings or Settings()
    metrics = Metrics()
    app = FastAPI(title="slimserve", version=__version__, lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.serving = settings, metrics, Serving({})
    app.state.loader = Loader(settings, metrics, backend_of or backends(settings))
    app.state.shadow = Shadow(settings.shadow_rate, settings.reference, metrics, settings.multi_label_threshold)
    app.state.inference = Inference(lambda: app.state.serving, metrics, app.state.shadow)
    app.state.feedback = Feedback(settings.feedback_capacity, settings.feedback_ttl_seconds, metrics,
                                  settings.multi_label_threshold)
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app, union_branches=api_v1.UNION_BRANCHES | api_feedback.UNION_BRANCHES)
    # The last added runs first: the metrics see every answer, the body limit's 413s too; a
    # request without an accepted key (with keys set) is refused before its body is read.
    routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    model_routes = [route for route in routes if isinstance(route, ModelRoute)]
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, model_routes=model_routes)
    keys.protect(app, keys.accepted(settings.api_keys, settings.api_keys_file), routes, model_routes,
                 settings.api_keys_scope, metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics, is_known=lambda name: app.state.serving.knows(name))
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn service.app:app` builds the app from SLIMSERVE_* variables on first access,
    # so importing this module has no side effects.
    if name == "app":
        return create_app()
    raise AttributeError(name)
