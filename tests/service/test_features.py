"""Compare, shadow sampling, cascades, reload, limits, headers and backpressure."""

import asyncio
import hashlib
import json
import logging
import shutil
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import metric_value, wait_until_async

from service.repository import load_variant
from variant.backends import open_backend

TEXTS = ["it's a charming and often affecting journey.", "the plot is thin and the acting is wooden", "fine"]


class Held:
    """Holds a batcher's runs until `gate` is set, and counts the requests that reached it:
    the batcher queues a job (or refuses it, 429) before `submit` first awaits, so once
    `submitted` is n, n requests are queued, running or refused."""

    def __init__(self, batcher) -> None:
        self.gate, self.submitted = threading.Event(), 0
        self._backend, self._submit = batcher.backend, batcher.submit
        batcher.backend, batcher.submit = self, self.submit

    def __getattr__(self, name):  # input_names, provider: the real backend's
        return getattr(self._backend, name)

    def run(self, arrays):
        self.gate.wait(10)
        return self._backend.run(arrays)

    async def submit(self, rows):
        self.submitted += 1
        return await self._submit(rows)


def classify(client, name, texts=TEXTS, **kw):
    return client.post(f"/v1/models/{name}/classify", json={"inputs": texts}, **kw)


def test_compare_reports_predictions_agreement_and_latency(client):
    body = client.post("/v1/compare", json={"inputs": TEXTS, "reference": "tiny-bert"}).json()
    assert body["reference"] == "tiny-bert"
    results = {r["model"]: r for r in body["results"]}
    assert set(results) == {"tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"}
    assert results["tiny-bert"]["agreement"] == 1.0
    assert all(0 <= r["agreement"] <= 1 and r["latency_seconds"] > 0 for r in results.values())
    single = classify(client, "tiny-bert-svd").json()["predictions"]
    assert [p["label"] for p in results["tiny-bert-svd"]["predictions"]] == [p["label"] for p in single]
    expected = np.mean([a["label"] == b["label"] for a, b in
                        zip(single, classify(client, "tiny-bert").json()["predictions"])])
    assert results["tiny-bert-svd"]["agreement"] == pytest.approx(expected)


@pytest.mark.parametrize("body, status, mentions", [
    ({"inputs": TEXTS, "models": ["nope"]}, 404, "'nope' not found"),
    ({"inputs": TEXTS, "models": []}, 422, "at least one variant"),
    ({"inputs": [], "models": ["tiny-bert"]}, 400, "at least one text"),
    ({"inputs": TEXTS, "reference": 3}, 422, "reference"),
])
def test_compare_refuses_bad_requests(client, body, status, mentions):
    response = client.post("/v1/compare", json=body)
    assert response.status_code == status and mentions in response.json()["error"]


def variants_folder(models_dir, tmp_path, **copies) -> Path:
    """A models folder holding copies of the tiny variants under new names (new name → old)."""
    folder = tmp_path / "models"
    for new, old in copies.items():
        shutil.copytree(models_dir / old, folder / new)
    return folder


def compare(client, **body):
    return client.post("/v1/compare", json={"inputs": TEXTS, **body})


def test_compare_defaults_to_the_uncompressed_variant_not_the_first_by_name(client_for, models_dir, tmp_path):
    # tiny-bert is a plain export (method "none"); tiny-bert-svd is compressed.
    client = client_for(variants_folder(models_dir, tmp_path, **{"a-svd": "tiny-bert-svd", "z-plain": "tiny-bert"}))
    body = compare(client).json()
    assert body["reference"] == "z-plain"
    assert {r["model"]: r["agreement"] for r in body["results"]}["z-plain"] == 1.0
    only_svd = compare(client, models=["a-svd"]).json()  # the reference runs even when not listed
    assert only_svd["reference"] == "z-plain" and [r["model"] for r in only_svd["results"]] == ["a-svd"]
    assert compare(client, reference="a-svd").json()["reference"] == "a-svd"  # the request's field wins


def test_original_is_preferred_among_several_uncompressed_variants(client_for, models_dir, tmp_path):
    folder = variants_folder(models_dir, tmp_path, **{"a-plain": "tiny-bert", "original": "tiny-bert",
                                                       "b-svd": "tiny-bert-svd"})
    assert compare(client_for(folder)).json()["reference"] == "original"
    shutil.rmtree(folder / "original")
    assert compare(client_for(folder)).json()["reference"] == "a-plain"  # else the first by name


def test_the_reference_setting_overrides_the_rule(client_for, models_dir, tmp_path):
    folder = variants_folder(models_dir, tmp_path, original="tiny-bert", svd="tiny-bert-svd")
    assert compare(client_for(folder, reference="svd")).json()["reference"] == "svd"


def test_without_an_uncompressed_variant_compare_asks_for_a_reference(client_for, models_dir, tmp_path, caplog):
    folder = variants_folder(models_dir, tmp_path, svd="tiny-bert-svd", int8="tiny-roberta-int8")
    with caplog.at_level(logging.WARNING, logger="slimserve"):
        client = client_for(folder, shadow_rate=1.0)
    response = compare(client)
    assert response.status_code == 422 and response.json()["error_type"] == "validation"
    assert response.json()["error"].startswith("reference:")
    assert compare(client, reference="svd").status_code == 200
    # Shadow sampling is off, said once at startup, not per request.
    assert classify(client, "int8").status_code == 200
    client.wait(client.app.state.shadow.drain())
    assert "slimserve_shadow_inputs_total{" not in client.get("/metrics").text
    assert "slimserve_shadow_dropped_total{" not in client.get("/metrics").text
    warnings = [r for r in caplog.records if "shadow" in r.getMessage()]
    assert len(warnings) == 1 and "shadow sampling is off" in warnings[0].getMessage()


def test_shadow_sampling_mirrors_to_the_uncompressed_variant_by_default(client_for, models_dir, tmp_path):
    client = client_for(variants_folder(models_dir, tmp_path, **{"a-svd": "tiny-bert-svd", "z-plain": "tiny-bert"}),
                        shadow_rate=1.0)
    assert classify(client, "a-svd").status_code == 200
    assert classify(client, "z-plain").status_code == 200  # the reference is never mirrored to itself
    client.wait(client.app.state.shadow.drain())
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_shadow_inputs_total", model="a-svd") == len(TEXTS)
    with pytest.raises(AssertionError, match="not in metrics"):
        metric_value(text, "slimserve_shadow_inputs_total", model="z-plain")


def test_shadow_sampling_counts_agreement_with_the_reference(client_for):
    client = client_for(shadow_rate=1.0, reference="tiny-bert")
    assert classify(client, "tiny-bert-svd").status_code == 200
    assert classify(client, "tiny-bert").status_code == 200  # the reference is never mirrored to itself
    client.wait(client.app.state.shadow.drain())
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_shadow_inputs_total", model="tiny-bert-svd") == len(TEXTS)
    agreements = metric_value(text, "slimserve_shadow_agreements_total", model="tiny-bert-svd")
    svd = [p["label"] for p in classify(client, "tiny-bert-svd").json()["predictions"]]
    ref = [p["label"] for p in classify(client, "tiny-bert").json()["predictions"]]
    assert agreements == sum(a == b for a, b in zip(svd, ref))
    assert metric_value(text, "slimserve_shadow_probability_difference_count", model="tiny-bert-svd") == len(TEXTS)
    with pytest.raises(AssertionError, match="not in metrics"):
        metric_value(text, "slimserve_shadow_inputs_total", model="tiny-bert")


def test_no_shadow_without_a_rate(client):
    classify(client, "tiny-bert-svd")
    client.wait(client.app.state.shadow.drain())
    assert "slimserve_shadow_inputs_total{" not in client.get("/metrics").text


def test_cascade_falls_back_below_its_threshold(client_for, models_copy):
    folder = models_copy
    (folder / "cascades.json").write_text(json.dumps({
        "always": {"fast": "tiny-bert-svd", "reference": "tiny-bert", "threshold": 1.0},
        "never": {"fast": "tiny-bert-svd", "reference": "tiny-bert", "threshold": 0.0},
    }))
    client = client_for(folder, cascades={"by-env": {"fast": "tiny-bert-svd", "reference": "nope", "threshold": 0.5}})
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["always"]["cascade"]["fast"] == "tiny-bert-svd" and listed["always"]["state"] == "ready"
    assert listed["by-env"]["state"] == "failed" and "nope" in listed["by-env"]["reason"]
    reference = classify(client, "tiny-bert").json()["predictions"]
    fast = classify(client, "tiny-bert-svd").json()["predictions"]
    assert classify(client, "always").json()["predictions"] == reference
    assert classify(client, "never").json()["predictions"] == fast
    broken = classify(client, "by-env")
    assert broken.status_code == 503 and "needs nope" in broken.json()["error"]
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_cascade_fallbacks_total", model="always") == len(TEXTS)
    assert metric_value(text, "slimserve_cascade_inputs_total", model="never") == len(TEXTS)
    assert metric_value(text, "slimserve_requests_total", model="always", status="200") == 1


def test_reload_swaps_variants_while_requests_keep_answering(client_for, models_copy):
    folder = models_copy
    client = client_for(folder, admin_token="s3cret")
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 401
    shutil.copytree(folder / "tiny-bert", folder / "tiny-bert-copy")
    shutil.rmtree(folder / "tiny-roberta-int8")
    # Hold the old set's tiny-bert inside a run, so requests are in flight across the swap.
    old = client.app.state.serving.variants["tiny-bert"].batcher
    held = Held(old)

    async def traffic_during_reload():
        requests = [asyncio.ensure_future(client.client.post("/v1/models/tiny-bert/classify", json={"inputs": TEXTS}))
                    for _ in range(20)]
        await wait_until_async(lambda: held.submitted == 20, "all 20 requests to reach the old batcher")
        reload = asyncio.ensure_future(client.client.post("/admin/reload", headers={"authorization": "Bearer s3cret"}))
        await wait_until_async(lambda: client.app.state.serving.variants["tiny-bert"].batcher is not old,
                               "the reload to swap in the new set (the old one then drains)")
        held.gate.set()
        return await asyncio.gather(reload, *requests)

    reload, *answers = client.wait(traffic_during_reload())
    assert reload.status_code == 200 and reload.json()["models"]["tiny-bert-copy"] == "ready"
    assert [a.status_code for a in answers] == [200] * 20
    names = {m["name"] for m in client.get("/v1/models").json()["models"]}
    assert names == {"tiny-bert", "tiny-bert-svd", "tiny-bert-copy"}
    assert classify(client, "tiny-bert-copy").status_code == 200
    text = client.get("/metrics").text
    assert 'slimserve_model_ready{model="tiny-roberta-int8"}' not in text


def test_a_failed_reload_keeps_the_running_set(client_for, models_copy):
    folder = models_copy
    client = client_for(folder, admin_token="s3cret")
    shutil.rmtree(folder)
    response = client.post("/admin/reload", headers={"authorization": "Bearer s3cret"})
    assert response.status_code == 503 and "still serving" in response.json()["error"]
    assert classify(client, "tiny-bert").status_code == 200


def test_responses_carry_timing_and_digest_headers(client, models_dir):
    started = time.perf_counter()
    response = classify(client, "tiny-bert")
    elapsed_ms = (time.perf_counter() - started) * 1000
    queued, inference = float(response.headers["x-queue-time"]), float(response.headers["x-inference-time"])
    assert queued >= 0 and inference > 0 and queued + inference <= elapsed_ms  # milliseconds, within this request
    # The model and tokenizer files, not variant.json (docs/contracts.md, `digest`).
    files = "".join(f"{name} {hashlib.sha256((models_dir / 'tiny-bert' / name).read_bytes()).hexdigest()}\n"
                    for name in ("model.onnx", "tokenizer.json"))
    assert response.headers["x-model-digest"] == f"sha256:{hashlib.sha256(files.encode()).hexdigest()}"


def test_bodies_over_the_limit_are_413(client_for):
    client = client_for(max_body_bytes=2048)
    response = classify(client, "tiny-bert", texts=["word " * 1000])
    assert response.status_code == 413 and response.json()["error_type"] == "too_large"
    assert classify(client, "tiny-bert").status_code == 200


def test_a_full_queue_answers_429_with_retry_after(client_for):
    client = client_for(max_queue=1)
    held = Held(client.app.state.serving.variants["tiny-bert"].batcher)

    async def burst():
        tasks = [asyncio.ensure_future(client.client.post("/v1/models/tiny-bert/classify", json={"inputs": ["a"]}))
                 for _ in range(6)]
        await wait_until_async(lambda: held.submitted == 6, "all 6 requests to be queued, running or refused")
        held.gate.set()
        return await asyncio.gather(*tasks)

    answers = client.wait(burst())
    statuses = [r.status_code for r in answers]
    # One request fits the queue; the held run may already have taken one (two, if both
    # were in before it started) or none (if all six arrived before the batcher woke, as
    # on a busy machine). Every other one was refused.
    assert statuses.count(200) in (1, 2, 3) and statuses.count(429) == 6 - statuses.count(200), statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["error_type"] == "overloaded"
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_requests_total", model="tiny-bert", status="429") == statuses.count(429)


def test_queue_and_batch_metrics(client):
    classify(client, "tiny-bert")
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_queue_duration_seconds_count", model="tiny-bert") == 1
    assert metric_value(text, "slimserve_queue_depth", model="tiny-bert") == 0


def test_warmup_runs_before_ready(models_dir):
    shapes = []
    variant = load_variant(models_dir / "tiny-bert", open_backend, warmup=lambda n: shapes.append(n) or [(1, 16), (4, n)])
    assert variant.ready and shapes == [64] and variant.opened.warmup_seconds > 0
    too_long = load_variant(models_dir / "tiny-bert", open_backend, warmup=lambda n: [(1, 4096)])
    assert too_long.state == "failed"  # a shape the model cannot run fails the load, not the first request


def test_warmup_seconds_are_published(client_for):
    client = client_for(warmup=True)
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_model_warmup_seconds", model="tiny-bert") > 0


@pytest.mark.parametrize("setting, provider", [("cuda", "CUDAExecutionProvider"),
                                               ("tensorrt", "TensorrtExecutionProvider")])
def test_a_gpu_provider_is_used_where_present_and_otherwise_the_cpu_says_so(models_dir, caplog, setting, provider):
    import onnxruntime as ort

    with caplog.at_level(logging.WARNING, logger="slimserve.backend"):
        variant = load_variant(models_dir / "tiny-bert", partial(open_backend, provider=setting))
    assert variant.ready
    if provider in ort.get_available_providers():
        assert variant.opened.backend.provider == provider and "serving on the CPU" not in caplog.text
    else:
        assert variant.opened.backend.provider == "CPUExecutionProvider" and "serving on the CPU" in caplog.text
