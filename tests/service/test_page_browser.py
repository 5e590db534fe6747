"""The page at GET / in a real headless Chromium (tests/browser.py), over a live server on
fake variants: it shows each variant's figures, runs a comparison typed into it, shows
every variant's answer and a refusal, and fetches nothing but this service's routes.

SLIMSERVE_SCREENSHOT=PATH also saves the screenshot there (docs/images/page.png is one)."""

import os
import shutil
from pathlib import Path

import httpx
import pytest
from browser import chromium, open_page
from conftest import fake_variants, wait_until
from fakes import FakeBackend

from variant.manifest import Evaluation, Runtime, read_manifest, write_manifest

pytestmark = [
    pytest.mark.slow,  # a browser and a live server
    pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (Debian's `chromium` package; "
                                                  ".ci/run installs it)"),
]

TEXT = "a charming and often affecting journey"
TRAFFIC = [TEXT, "the plot is thin and the acting is wooden", "a gorgeous, witty and seductive movie"]
DATASET = "sst2-dev.tsv@54a9c12c"
MAX_CHARS = 300
# GET /v1/routes' shape, answered by the browser itself: the test's service has no routes.
ROUTES = {"routes": [{"name": "sentiment", "arms": {"original": 90, "svd": 10}, "state": "ready", "reason": None}]}
# What `compressor evaluate` and `compressor search` would have recorded; made up for the test.
RECORDS = {
    "original": {"accuracy": 0.8876, "latency": (7.6, 318.6), "onnx_bytes": 90_964_025},
    "svd": {"accuracy": 0.8819, "latency": (5.1, 201.0), "onnx_bytes": 46_120_448},
    "int8": {"accuracy": 0.8865, "latency": (5.8, 183.5), "onnx_bytes": 23_704_625,
             "search": {"speedup": 1.35, "speedups": {"1": 1.21, "32": 1.49}}},
}


def recorded_variants(root: Path) -> Path:
    """Three fake variants that answer differently (salts), with the figures of RECORDS in
    their manifests."""
    folder = fake_variants(root, original={"answers": "spread"},
                           svd={"method": "svd", "answers": "spread", "salt": 1},
                           int8={"method": "int8-static", "quantize": "int8-static", "answers": "spread", "salt": 4})
    for name, record in RECORDS.items():
        manifest = read_manifest(folder / name)
        batch_1, batch_32 = record["latency"]
        manifest.evaluations[DATASET] = Evaluation(
            dataset="sst2-dev.tsv", rows=872, labelled=True, accuracy=record["accuracy"], reference="original",
            latency_ms={"batch_1": {"p50": batch_1}, "batch_32": {"p50": batch_32}})
        manifest.onnx_bytes = record["onnx_bytes"]
        if "search" in record:
            manifest.runtime = Runtime(**manifest.runtime.model_dump(), **record["search"])
        write_manifest(folder / name, manifest)
    return folder


def test_the_page_shows_the_variants_and_compares_a_typed_text(live_server, tmp_path):
    address = live_server(backend_of=FakeBackend, models=recorded_variants(tmp_path / "models"), shadow_rate=1.0,
                          reference="original", max_input_chars=MAX_CHARS)
    base = f"http://{address}"
    with httpx.Client(base_url=base) as api:
        for name in RECORDS:
            for text in TRAFFIC:
                assert api.post(f"/v1/models/{name}/classify", json={"inputs": [text]}).status_code == 200
        wait_until(lambda: all(m["shadow_inputs"] == len(TRAFFIC) for m in api.get("/v1/stats").json()["models"]
                               if m["model"] != "original"), "the shadow comparisons")
        stats = {m["model"]: m for m in api.get("/v1/stats").json()["models"]}
        expected = {r["model"]: r["predictions"][0]["label"]
                    for r in api.post("/v1/compare", json={"inputs": [TEXT]}).json()["results"]}
    assert set(expected) == set(RECORDS)

    with open_page(tmp_path / "profile", width=1100, height=800) as page:
        page.answer("/v1/routes", ROUTES)
        page.navigate(base + "/")
        page.wait_for('#variants[data-state="ready"]')
        for name in RECORDS:
            assert page.text(f'#variants thead th[data-model="{name}"]') == name

        def cell(figure: str, name: str) -> str:
            return page.text(f'#variants tr[data-figure="{figure}"] td[data-model="{name}"]')

        assert cell("accuracy", "original") == "88.8%"
        assert cell("delta", "svd") == "−0.6 pts"
        assert cell("size", "int8") == "23.7 MB"
        assert cell("speedup", "int8").startswith("1.35×")
        assert cell("speedup", "svd") == "batch 1: 1.49×, batch 32: 1.59×"  # original's median over svd's
        assert cell("requests", "svd") == "3"
        for name in ("svd", "int8"):
            assert cell("shadow", name) == f"{100 * stats[name]['shadow_agreement']:.1f}% of 3"
        assert cell("shadow", "original") == "—"  # the reference is not compared with itself
        assert "ms" in cell("latency", "int8")
        assert cell("feedback", "int8") == "—"
        weights = '#variants tr[data-figure="route weights"] td[data-model="{}"]'
        assert page.text(weights.format("original")) == "sentiment: 90 (90.0%)"
        assert page.text(weights.format("svd")) == "sentiment: 10 (10.0%)"
        assert page.text(weights.format("int8")) == "—"

        page.type_into("#text", TEXT)
        page.click("#compare")
        page.wait_for('#compare-results[data-state="done"], #compare-results[data-state="error"]')
        assert page.text("#compare-error") == ""
        for name, label in expected.items():
            row = f'#compare-results tr[data-model="{name}"]'
            assert page.text(row).startswith(name)
            assert page.text(row + " .label") == label
        assert "(reference)" in page.text('#compare-results tr[data-model="original"]')

        png = page.screenshot(tmp_path / "page.png")
        assert png.startswith(b"\x89PNG")
        if os.environ.get("SLIMSERVE_SCREENSHOT"):
            shutil.copyfile(tmp_path / "page.png", os.environ["SLIMSERVE_SCREENSHOT"])

        # A refusal reads as the service's message, not as a broken page.
        page.evaluate('document.querySelector("#text").value = ""')
        page.type_into("#text", "x" * (MAX_CHARS + 1))
        page.click("#compare")
        page.wait_for('#compare-results[data-state="error"]')
        error = page.text("#compare-error")
        assert "413" in error and f"the limit is {MAX_CHARS} characters" in error

        requests = page.requests
    assert {f"{base}/", f"{base}/v1/models", f"{base}/v1/stats", f"{base}/v1/routes", f"{base}/v1/compare"} \
        <= set(requests)
    assert all(url.startswith((base + "/", "data:")) for url in requests), requests


def test_for_a_pair_model_the_second_box_is_open_and_its_text_is_sent(live_server, tmp_path):
    scorer = {"task": "regression", "labels": ("score",)}
    models = fake_variants(tmp_path / "models", original=scorer, svd={**scorer, "method": "svd"})
    base = "http://" + live_server(backend_of=FakeBackend, models=models, reference="original")
    pair = {"text": "is the journey worth taking", "text_pair": TEXT}
    with httpx.Client(base_url=base) as api:
        scores = {r["model"]: r["predictions"][0]["score"]
                  for r in api.post("/v1/compare", json={"inputs": [pair]}).json()["results"]}
        alone = api.post("/v1/compare", json={"inputs": [pair["text"]]}).json()["results"]
    assert all(scores[r["model"]] != r["predictions"][0]["score"] for r in alone)  # the pair shows in the answer

    with open_page(tmp_path / "profile") as page:
        page.navigate(base + "/")
        page.wait_for('#variants[data-state="ready"]')
        assert page.evaluate('document.querySelector("#pair-box").open') is True
        # The service serves no route: its empty GET /v1/routes reads as no routes, not as an error.
        assert page.text('#variants tr[data-figure="route weights"] td[data-model="svd"]') == "no routes"
        assert page.text("#variants-error") == ""
        page.type_into("#text", pair["text"])
        page.type_into("#text-pair", pair["text_pair"])
        page.click("#compare")
        page.wait_for('#compare-results[data-state="done"], #compare-results[data-state="error"]')
        assert page.text("#compare-error") == ""
        for name, score in scores.items():
            row = page.evaluate(f'[...document.querySelectorAll(\'#compare-results tr[data-model="{name}"] td\')]'
                                '.map((td) => td.innerText)')
            assert row[1:3] == ["score", f"{score:.3f}"]
            assert row[4].startswith("correlation")


def test_where_the_service_wants_a_key_the_page_asks_for_it_and_sends_it(live_server, tmp_path):
    base = "http://" + live_server(backend_of=FakeBackend, models=recorded_variants(tmp_path / "models"),
                                   api_keys="page-key")
    with open_page(tmp_path / "profile") as page:
        page.navigate(base + "/")
        page.wait_for('#variants[data-state="ready"]')
        page.type_into("#text", TEXT)
        page.click("#compare")
        page.wait_for('#compare-results[data-state="error"]')
        assert "401" in page.text("#compare-error")
        assert page.evaluate('document.querySelector("#key-box").open') is True  # opened to show where it goes
        page.type_into("#api-key", "page-key")
        page.click("#compare")
        page.wait_for('#compare-results[data-state="done"]')
        assert page.text("#compare-error") == ""
        shown = page.evaluate('[...document.querySelectorAll("#compare-results tr[data-model]")]'
                              '.map((tr) => tr.dataset.model)')
        assert set(RECORDS) - {"original"} <= set(shown)  # every variant answered, with the key
