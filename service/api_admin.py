"""POST /admin/reload: load the models folder again and swap the new set in, behind a
bearer token (off unless SLIMSERVE_ADMIN_TOKEN is set)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import APIRouter, Header, Request
from pydantic import SecretStr

from service.api import serving_of
from service.errors import NotFound, NotReady, Unauthorized, documented, redact
from service.serving import Loader

log = logging.getLogger("slimserve")
router = APIRouter(tags=["admin"])


def authorize(token: SecretStr | None, authorization: str | None) -> None:
    if token is None:
        raise NotFound("admin routes are off (set SLIMSERVE_ADMIN_TOKEN to enable them)")
    given = (authorization or "").removeprefix("Bearer ").encode()
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise Unauthorized("admin routes need 'Authorization: Bearer <SLIMSERVE_ADMIN_TOKEN>'")


@router.post("/admin/reload", responses=documented(Unauthorized, NotFound, NotReady))
async def reload(request: Request, authorization: str | None = Header(None)) -> dict[str, Any]:
    """Load the models folder again and swap it in; requests in flight finish on the old set."""
    state = request.app.state
    authorize(state.settings.admin_token, authorization)
    loader: Loader = state.loader
    async with loader.lock:
        old = serving_of(request)
        try:
            new = await loader.load(old)
        except OSError as exc:  # the models folder went away: keep serving what is loaded
            log.warning("reload failed, still serving the previous set: %s", exc)
            raise NotReady("reload failed, still serving the previous set: "
                           f"{redact(str(exc), state.settings.models)}") from None
        state.serving = new
        await old.stop()
    return {"status": "reloaded", "models": {n: v.state for n, v in new.variants.items()},
            "cascades": new.ready_cascades(), "routes": new.ready_routes(), "routes_refused": new.routes_refused}
