"""Refuse request bodies over `max_bytes` with 413 before any route parses them, in the
error shape of the API the request addressed.

A refused request never reaches its route, so the refusal counts under the model the
path names (for the metrics) by matching the model routes, which only these requests
need: every other request is routed once, by the router.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, error_response
from service.metrics import count_under


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, model_routes: Sequence[BaseRoute] = ()) -> None:
        self.app, self.max_bytes, self.model_routes = app, max_bytes, model_routes

    async def refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        for route in self.model_routes:
            match, child = route.matches(scope)
            name = child.get("path_params", {}).get("name")
            if match is Match.FULL and name is not None:
                count_under(scope, name)
                break
        error = PayloadTooLarge(f"request body is {size} bytes; the limit is {self.max_bytes}")
        await error_response(error, scope["path"])(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(scope, receive, send, declared.decode())
            return
        # Read the whole body here (it is at most max_bytes), so a client that sends more
        # than it declared, or declares nothing, is refused the same way.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.refuse(scope, receive, send, f"over {size}")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)
