"""The page a browser gets at GET /: one HTML file (page.html beside this module, CSS and
JavaScript inline) that reads the JSON routes and shows the variants side by side. It
loads nothing from anywhere but this service, and its Content-Security-Policy holds it
to that.

Whether a request gets the page or the JSON index is `prefers_html`'s rule alone."""

from __future__ import annotations

import functools
from importlib import resources

from fastapi.responses import HTMLResponse

PAGE_FILE = "page.html"
JSON_TYPES = ("application/json", "application/*", "*/*")
# Inline style and script are the page's own; connections, images and everything else
# may only reach this origin.
POLICY = ("default-src 'none'; connect-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; "
          "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def qualities(accept: str) -> dict[str, float]:
    """Each media range of an Accept header and its quality (`q`, 1 when absent)."""
    found: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # a quality that does not parse accepts nothing
        found[media.lower()] = max(q, found.get(media.lower(), 0.0))
    return found


def prefers_html(accept: str | None) -> bool:
    """True when the client names text/html and ranks it above JSON, as browsers do
    (`text/html,…,*/*;q=0.8`). Everything else gets JSON: no Accept header, `*/*` (curl),
    `application/json`, and a tie between the two."""
    ranked = qualities(accept or "")
    html = ranked.get("text/html", 0.0)
    json = max((ranked[t] for t in JSON_TYPES if t in ranked), default=0.0)
    return html > 0 and html > json


@functools.cache
def page_html() -> str:
    return resources.files("service").joinpath(PAGE_FILE).read_text(encoding="utf-8")


def page_response() -> HTMLResponse:
    return HTMLResponse(page_html(), headers={"content-security-policy": POLICY, "vary": "Accept",
                                              "cache-control": "no-cache"})
