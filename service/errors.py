"""The service's error family and how each kind reaches a client.

    ServiceError                 (status, error_type)
    ├── EmptyInput               400 empty
    ├── Unauthorized             401 unauthorized
    ├── NotFound                 404 not_found
    ├── MethodNotAllowed         405 method_not_allowed
    ├── Conflict                 409 conflict
    ├── PayloadTooLarge          413 too_large
    ├── Malformed                422 validation
    ├── Overloaded               429 overloaded
    ├── NotReady                 503 unavailable
    ├── DeadlineExceeded         504 timeout
    └── BackendFailure           424 backend

Every error leaves the service as JSON `{"error": message, "error_type": kind}`, or
`{"error": message}` under /v2 (`error_response` renders both); `install` gives an app
the handlers that render every failure so, FastAPI's and Starlette's own included. What a client reads
never shows the server's file paths: `redact` is applied where server-side text (an ONNX
Runtime or OS error) becomes a client-facing message, and the full text is logged.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("slimserve")
V2_PREFIX = "/v2"


class ServiceError(Exception):
    status = 500
    error_type = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str] | None:
        return None


class EmptyInput(ServiceError):
    """The request carried nothing to classify."""

    status = 400
    error_type = "empty"


class Unauthorized(ServiceError):
    """No bearer key the service accepts: a client API key (SLIMSERVE_API_KEYS) or the admin token."""

    status = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class NotFound(ServiceError):
    """No such variant (or route) here."""

    status = 404
    error_type = "not_found"


class MethodNotAllowed(ServiceError):
    """The route exists but not for this HTTP method."""

    status = 405
    error_type = "method_not_allowed"


class Conflict(ServiceError):
    """The request is valid but cannot apply to the service's state as it is: a file it
    would edit cannot be read, or holds an entry that no longer fits."""

    status = 409
    error_type = "conflict"


class PayloadTooLarge(ServiceError):
    """Too many inputs, too long an input, or too big a body."""

    status = 413
    error_type = "too_large"


class Malformed(ServiceError):
    """The body does not match the request schema; the message names the field."""

    status = 422
    error_type = "validation"


class Overloaded(ServiceError):
    """The variant's queue is full: back off and retry."""

    status = 429
    error_type = "overloaded"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


class NotReady(ServiceError):
    """The variant (or the whole service) cannot serve right now."""

    status = 503
    error_type = "unavailable"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its turn came; the model never ran for it."""

    status = 504
    error_type = "timeout"


class BackendFailure(ServiceError):
    """The model itself failed on an accepted request: the client's input was fine."""

    status = 424
    error_type = "backend"


# What a request that asks a model for an answer may be refused with.
MODEL_ERRORS = (EmptyInput, NotFound, PayloadTooLarge, Malformed, BackendFailure, Overloaded, NotReady,
                DeadlineExceeded)


class ErrorBody(BaseModel):
    error: str
    error_type: str


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error shape."""

    error: str


def documented(*errors: type[ServiceError], v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors a route can answer with, so clients and schema
    checkers know every status it may return."""
    model = V2ErrorBody if v2 else ErrorBody
    return {e.status: {"model": model, "description": e.__doc__ or e.error_type} for e in errors}


def first_error(errors: Sequence[Mapping[str, Any]], skip: Collection[str] = ()) -> str:
    """A validation failure as one line naming the field: `inputs.0: Input should be a valid string`.

    A union reports one error per branch, each under the branch's name (`skip` lists those
    names); the deepest error is the branch the client meant."""
    deepest = max(errors, key=lambda e: len(e.get("loc", ())))
    parts = [str(p) for p in deepest.get("loc", ()) if p != "body" and p not in skip]
    message = deepest.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{'.'.join(parts) or 'body'}: {message}"


# A path that starts at the root: not preceded by a word character or another path character.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])/[^\s'\"`,;:()<>\[\]{}]+")


def redact(text: str, models: Path | None = None) -> str:
    """`text` with no server path left: a path under the models folder becomes relative to
    it (`broken/model.onnx`), any other absolute path keeps only its last part."""
    if models is not None:
        for root in {str(models.absolute()), str(models.resolve())}:
            text = text.replace(root + os.sep, "")
    return ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def error_response(error: ServiceError, path: str) -> JSONResponse:
    """The one rendering of an error: `{"error", "error_type"}`, or under /v2 the Open
    Inference Protocol's `{"error"}`."""
    body = {"error": error.message}
    if not path.startswith(V2_PREFIX):
        body["error_type"] = error.error_type
    return JSONResponse(body, status_code=error.status, headers=error.headers())


def validation_message(exc: RequestValidationError, skip: Collection[str] = ()) -> str:
    """One line naming the offending field, e.g. `inputs.0: Input should be a valid string`."""
    errors = exc.errors()
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', 'decode error')}"
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") in ("model_attributes_type", "dict_type"):
        return "request body must be a JSON object (send content-type: application/json)"
    return first_error(errors, skip=skip)


def install(app: FastAPI, union_branches: Collection[str] = ()) -> None:
    """The app's error handlers: every failure, ours or the framework's, answers in the
    shape above. `union_branches` are the names validation errors carry for the branches
    of a union field, left out of the field a message names."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(Malformed(validation_message(exc, union_branches)), request.url.path)

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
