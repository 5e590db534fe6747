"""The service's error family and how each kind reaches a client.

    ServiceError                 (status, error_type)
    ├── EmptyInput               400 empty
    ├── Unauthorized             401 unauthorized
    ├── ModelNotFound            404 not_found
    ├── MethodNotAllowed         405 method_not_allowed
    ├── PayloadTooLarge          413 too_large
    ├── Malformed                422 validation
    ├── Overloaded               429 overloaded
    ├── NotReady                 503 unavailable
    └── BackendFailure           424 backend

Every error leaves the service as JSON `{"error": message, "error_type": kind}`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ServiceError(Exception):
    status = 500
    error_type = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}

    def headers(self) -> dict[str, str] | None:
        return None


class EmptyInput(ServiceError):
    """The request carried nothing to classify."""

    status = 400
    error_type = "empty"


class Unauthorized(ServiceError):
    """An admin route without the right bearer token."""

    status = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    """No such variant (or route) here."""

    status = 404
    error_type = "not_found"


class MethodNotAllowed(ServiceError):
    """The route exists but not for this HTTP method."""

    status = 405
    error_type = "method_not_allowed"


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


class BackendFailure(ServiceError):
    """The model itself failed on an accepted request: the client's input was fine."""

    status = 424
    error_type = "backend"


# What a request that asks a model for an answer may be refused with.
MODEL_ERRORS = (EmptyInput, ModelNotFound, PayloadTooLarge, Malformed, BackendFailure, Overloaded, NotReady)


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
