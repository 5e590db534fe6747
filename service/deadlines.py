"""A request's deadline: the moment after which its client no longer waits for the answer.

A client sets one in seconds with the `x-request-timeout` header, on every route that runs
a model, or with `timeout` in a /v1 classify body; given both, the sooner wins.
SLIMSERVE_MAX_REQUEST_TIMEOUT_SECONDS caps it, and is the deadline of a request that sets
none. It counts from when the route starts on the request. The batcher answers 504 for a
job whose deadline passed before its run, and never runs it (service/batching.py).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Header, Request
from pydantic import Field, StrictFloat

HEADER = "x-request-timeout"
EXPLAINED = ("Seconds the client waits for the answer: past them, a request still queued is answered 504 "
             "without running. Capped by SLIMSERVE_MAX_REQUEST_TIMEOUT_SECONDS.")

# A body field (StrictFloat: a JSON number, integers included, but no string or boolean).
Seconds = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False, description=EXPLAINED)]
# The header, as a route declares it: `x_request_timeout: RequestTimeout = None`.
RequestTimeout = Annotated[float | None, Header(alias=HEADER, gt=0, allow_inf_nan=False, description=EXPLAINED)]


def deadline_of(request: Request, *timeouts: float | None) -> float | None:
    """The time.perf_counter() time the request's answer is due by: the soonest of the
    client's `timeouts` and the server's bound; None when neither sets one."""
    bounds = [t for t in (*timeouts, request.app.state.settings.max_request_timeout_seconds) if t is not None]
    return time.perf_counter() + min(bounds) if bounds else None
