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
    status = 400
    error_type = "empty"


class Unauthorized(ServiceError):
    status = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    status = 404
    error_type = "not_found"


class MethodNotAllowed(ServiceError):
    status = 405
    error_type = "method_not_allowed"


class PayloadTooLarge(ServiceError):
    status = 413
    error_type = "too_large"


class Malformed(ServiceError):
    status = 422
    error_type = "validation"


class Overloaded(ServiceError):
    """The variant's queue is full: back off and retry."""

    status = 429
    error_type = "overloaded"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


class NotReady(ServiceError):
    status = 503
    error_type = "unavailable"


class BackendFailure(ServiceError):
    """The model itself failed on an accepted request: the client's input was fine."""

    status = 424
    error_type = "backend"
