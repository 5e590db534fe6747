"""Client API keys: which requests need `Authorization: Bearer <key>`, and the check.

Keys come from SLIMSERVE_API_KEYS (the keys themselves, comma-separated) and
SLIMSERVE_API_KEYS_FILE (their SHA-256 hex digests, one a line, `#` starting a comment);
either or both. Only digests are kept: a presented key is hashed and its digest compared
with every stored one by `hmac.compare_digest`, so how long a refusal takes says nothing
about how close a guess came. Keys are never logged, and no answer echoes one.

With keys set, the routes that run a model, and feedback on their answers, need one
(SLIMSERVE_API_KEYS_SCOPE=models, the default); with `all`, every route does but the health probes, which an orchestrator calls
without credentials. A refusal is a 401 with `www-authenticate: Bearer` in the error shape
of the API addressed, given before the body is read, and counted in
`slimserve_unauthorized_total{path}` (the route's path template, so clients cannot
create label values). The OpenAPI schema declares the bearer scheme on the guarded routes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import SecretStr
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import (
    V2_PREFIX,
    ErrorBody,
    Unauthorized,
    V2ErrorBody,
    error_response,
)
from service.metrics import Metrics

KeyScope = Literal["models", "all"]
# Liveness and readiness stay open under `all`: a probe carries no credentials.
OPEN_PATHS = frozenset({"/health/live", "/health/ready", f"{V2_PREFIX}/health/live", f"{V2_PREFIX}/health/ready"})
# Runs no model but moves the live accuracy of those that answered: as guarded as they are.
LABELLING_PATHS = frozenset({"/v1/feedback"})
DIGEST = re.compile(r"[0-9a-f]{64}")
SCHEME = "apiKey"  # the security scheme's name in the OpenAPI schema


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_keys(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(",") if key.strip()]


def read_digests(path: Path) -> list[str]:
    """The digests in a keys file; ValueError naming the line at fault, never its text (a
    key pasted there by mistake must not reach a log)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}") from None
    digests = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip().lower()
        if entry and not DIGEST.fullmatch(entry):
            raise ValueError(f"{path.name} line {number}: not a SHA-256 hex digest (64 hex digits)")
        if entry:
            digests.append(entry)
    if not digests:
        raise ValueError(f"{path.name} holds no digest")
    return digests


def accepted(keys: SecretStr | None, file: Path | None) -> tuple[str, ...]:
    """The digests of every key the service accepts; none: no route needs a key."""
    given = [digest(key) for key in split_keys(keys.get_secret_value())] if keys is not None else []
    return tuple(dict.fromkeys(given + (read_digests(file) if file is not None else [])))


def matches(digests: Sequence[str], authorization: str | None) -> bool:
    scheme, _, key = (authorization or "").partition(" ")
    presented = digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else ""
    found = False
    for stored in digests:  # every digest is compared, whichever matches
        found |= hmac.compare_digest(presented, stored)
    return found


def guarded(routes: Sequence[BaseRoute], model_routes: Sequence[BaseRoute], scope: KeyScope) -> list[BaseRoute]:
    """The routes that need a key: the model routes and feedback, or every route
    (`routes`, the app's own and its routers', flat) but the probes."""
    if scope == "models":
        return [*model_routes, *(route for route in routes if getattr(route, "path", None) in LABELLING_PATHS)]
    return [route for route in routes if isinstance(getattr(route, "path", None), str) and route.path not in OPEN_PATHS]


class ApiKeyMiddleware:
    """Refuses a request to a guarded route that carries no accepted key."""

    def __init__(self, app: ASGIApp, digests: Sequence[str], routes: Sequence[BaseRoute], metrics: Metrics) -> None:
        self.app, self.digests, self.routes, self.metrics = app, digests, routes, metrics

    def route_of(self, scope: Scope) -> BaseRoute | None:
        return next((route for route in self.routes if route.matches(scope)[0] is Match.FULL), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route_of(scope) if scope["type"] == "http" else None
        if route is not None:
            authorization = dict(scope.get("headers", [])).get(b"authorization")
            if not matches(self.digests, authorization.decode("latin-1") if authorization is not None else None):
                self.metrics.unauthorized.labels(getattr(route, "path", "")).inc()
                refusal = ("this route needs 'Authorization: Bearer <key>'" if authorization is None
                           else "the bearer key is not one this service accepts")
                await error_response(Unauthorized(refusal), scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def openapi_with_keys(app: FastAPI, routes: Sequence[BaseRoute]) -> Callable[[], dict[str, Any]]:
    """`app.openapi` with the bearer scheme declared on `routes` and their 401 documented."""
    plain = app.openapi
    guarded_paths = {getattr(route, "path", None) for route in routes}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
            "type": "http", "scheme": "bearer", "description": "A client API key (SLIMSERVE_API_KEYS)."}
        for path, operations in schema.get("paths", {}).items():
            if path not in guarded_paths:
                continue
            body = (V2ErrorBody if path.startswith(V2_PREFIX) else ErrorBody).model_json_schema()
            for operation in operations.values():
                operation["security"] = [{SCHEME: []}]
                operation.setdefault("responses", {})["401"] = {
                    "description": Unauthorized.__doc__, "content": {"application/json": {"schema": body}}}
        return schema

    return openapi


def protect(app: FastAPI, digests: Sequence[str], routes: Sequence[BaseRoute], model_routes: Sequence[BaseRoute],
            scope: KeyScope, metrics: Metrics) -> None:
    """Guard `app`'s routes (see `guarded`) with the keys of `digests`; nothing when there
    are none. Add it inside the metrics middleware and outside the body limit, so a
    request without a key is refused before its body is read."""
    if not digests:
        return
    routes = guarded(routes, model_routes, scope)
    app.add_middleware(ApiKeyMiddleware, digests=digests, routes=routes, metrics=metrics)
    app.openapi = openapi_with_keys(app, routes)  # type: ignore[method-assign]
