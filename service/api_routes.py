"""GET /v1/routes: every route, how it splits and whether it serves. PUT and DELETE
/admin/routes/{name}: change one route, behind the admin token, by rewriting routes.json
(so a reload keeps the change) and serving the new set at once."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.api import serving_of
from service.api_admin import authorize
from service.errors import (
    Conflict,
    Malformed,
    NotFound,
    NotReady,
    Unauthorized,
    documented,
    redact,
)
from service.routes import (
    ROUTES_FILE,
    Arms,
    Weights,
    naming_problem,
    read_routes_file,
    set_problem,
    write_routes_file,
)
from service.serving import Serving

log = logging.getLogger("slimserve")
router = APIRouter()


class RouteEntry(BaseModel):
    name: str
    arms: dict[str, int | float] = Field(description="Variant → weight; a request goes to an arm with the "
                                                       "probability weight / sum of the weights.")
    state: Literal["ready", "failed"]
    reason: str | None = Field(None, description="Why a failed route does not serve.")


class RouteList(BaseModel):
    routes: list[RouteEntry]
    refused: str | None = Field(None, description=(
        "Why the routes last read (routes.json with SLIMSERVE_ROUTES) were refused; those listed are the ones kept."))


class RouteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arms: Arms = Field(description="Variant → weight: numbers ≥ 0, at least one above 0.")


def route_list(serving: Serving) -> RouteList:
    entries = []
    for name, arms in serving.routes.items():
        problem = serving.route_problem(name)
        entries.append(RouteEntry(name=name, arms=arms, state="failed" if problem else "ready", reason=problem))
    return RouteList(routes=entries, refused=serving.routes_refused)


@router.get("/v1/routes", tags=["v1"], response_model=RouteList)
async def list_routes(request: Request) -> RouteList:
    return route_list(serving_of(request))


async def admin(request: Request, authorization: str | None = Header(None)) -> None:
    # A dependency runs before the body is read: without the token, the answer is 401
    # (or 404), whatever the body holds.
    authorize(request.app.state.settings.admin_token, authorization)


EDIT_ERRORS = documented(Unauthorized, NotFound, Conflict, Malformed, NotReady)


@router.put("/admin/routes/{name}", tags=["admin"], dependencies=[Depends(admin)], response_model=RouteList,
            responses=EDIT_ERRORS)
async def put_route(name: str, body: RouteBody, request: Request) -> RouteList:
    """Set route `name`'s arms (declaring it if new), written to routes.json; refused whole (422)
    when an arm is no variant or the name is taken."""
    return await edit_routes(request, name, body.arms)


@router.delete("/admin/routes/{name}", tags=["admin"], dependencies=[Depends(admin)], response_model=RouteList,
               responses=EDIT_ERRORS)
async def delete_route(name: str, request: Request) -> RouteList:
    """Remove route `name` from routes.json (where SLIMSERVE_ROUTES declares it too, its arms there serve again)."""
    return await edit_routes(request, name, None)


async def edit_routes(request: Request, name: str, arms: Weights | None) -> RouteList:
    """routes.json with `name` set to `arms` (None: removed), checked as a reload would check
    it, written, and served; nothing changes when it is refused."""
    state = request.app.state
    models, declared = state.settings.models, state.settings.routes
    async with state.loader.lock:  # a reload reads the file and swaps the set: never in between
        serving = serving_of(request)
        try:
            written = await run_in_threadpool(read_routes_file, models)
        except (OSError, ValueError) as exc:
            raise Conflict(f"{ROUTES_FILE} cannot be read ({redact(str(exc), models)}); fix or remove it first") from None
        if arms is not None:
            written[name] = arms
        elif name in written:
            del written[name]
        else:
            where = "is declared by SLIMSERVE_ROUTES only" if name in declared else "is not one"
            raise NotFound(f"route {name!r} {where} in {ROUTES_FILE}")
        routes = {**declared, **written}
        if arms is not None:
            problem = naming_problem(name, arms, serving.variants, serving.cascades, routes)
            if problem is not None:
                raise Malformed(problem)
        problem = set_problem(routes, serving.variants, serving.cascades)
        if problem is not None:  # another route of the file no longer fits the folder
            raise Conflict(f"{ROUTES_FILE} would be refused: {problem}")
        try:
            await run_in_threadpool(write_routes_file, models, written)
        except OSError as exc:
            raise NotReady(f"{ROUTES_FILE} could not be written: {redact(str(exc), models)}") from None
        serving.routes, serving.routes_refused = routes, None
    log.info("route %s %s", name, f"now splits {arms}" if arms is not None else "removed")
    return route_list(serving)
