"""GET / for a browser: the built-in page, chosen by the Accept header; every other client
keeps the JSON index. The page in a real browser: test_page_browser.py."""

import fnmatch
import re
from pathlib import Path

import pytest

from service.page import PAGE_FILE, prefers_html

ROOT = Path(__file__).resolve().parents[2]
CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(("accept", "html"), [
    (CHROME, True),
    (FIREFOX, True),
    ("text/html", True),
    ("text/html;q=0.5, application/json;q=0.4", True),
    (None, False),
    ("", False),
    ("*/*", False),  # curl
    ("application/json", False),
    ("application/json, text/html", False),  # a tie goes to JSON
    ("text/html;q=0.8, application/json", False),
    ("text/html;q=0.5, */*", False),
    ("text/html;q=0", False),
    ("text/html;q=oops", False),
    ("text/*", False),  # only a client that names the page gets it
])
def test_only_a_client_ranking_html_above_json_gets_the_page(accept, html):
    assert prefers_html(accept) is html


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_json_clients_still_get_the_index(fake_client, accept):
    response = fake_client.get("/", headers={"accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["models"] == "/v1/models"
    assert response.headers["vary"] == "Accept"


def test_a_browser_gets_the_page_that_loads_nothing_from_elsewhere(fake_client):
    response = fake_client.get("/", headers={"accept": CHROME})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["vary"] == "Accept"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    page = response.text
    assert page.lstrip().lower().startswith("<!doctype html>")
    # No script, style sheet, font or image from another host, and no build output to fetch.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"@import|url\(|<script[^>]+src=|<link[^>]+stylesheet", page)
    for route in ("/v1/models", "/v1/stats", "/v1/routes", "/v1/compare"):  # what it reads: routes that exist
        assert f'"{route}"' in page
        assert fake_client.get(route).status_code in (200, 405)


def test_the_page_ships_in_the_wheel():
    """setuptools packs only the data files package-data names."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    assert (ROOT / "service" / PAGE_FILE).is_file()
    assert any(fnmatch.fnmatch(PAGE_FILE, p) for p in patterns)
