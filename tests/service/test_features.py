"""Compare, shadow sampling, cascades, reload, headers, backpressure and warm-up, over
HTTP on fake variants (tests/fakes.py): `plain` answers "sums" (every text negative),
`svd` answers "spread" (some texts positive, no probability at 1), so agreements and
fallbacks land between none and all."""

import asyncio
import hashlib
import json
import logging
import shutil
import time
from functools import partial

import numpy as np
import pytest
from conftest import (
    fake_variants,
    metric_value,
    toy_graph,
    wait_for_metric,
    wait_until_async,
)

from variant.backends import open_backend
from variant.tokenization import warmup_shapes

TEXTS = ["it's a charming and often affecting journey.", "the plot is thin and the acting is wooden", "fine"]
SPREAD = {"method": "svd", "answers": "spread", "salt": 1}  # on TEXTS: positive (0.62), negative (0.73), positive (0.88)
INT8 = {"method": "int8", "quantize": "int8"}


def classify(client, name, texts=TEXTS, **kw):
    return client.post(f"/v1/models/{name}/classify", json={"inputs": texts}, **kw)


def labels_of(client, name) -> list[str]:
    return [p["label"] for p in classify(client, name).json()["predictions"]]


def compare(client, **body):
    return client.post("/v1/compare", json={"inputs": TEXTS, **body})


def test_compare_reports_predictions_agreement_and_latency(fake_client_for, tmp_path):
    client = fake_client_for(fake_variants(tmp_path, plain={}, svd=SPREAD, int8=INT8))
    body = compare(client, reference="plain").json()
    assert body["reference"] == "plain"
    results = {r["model"]: r for r in body["results"]}
    assert set(results) == {"plain", "svd", "int8"}
    assert results["plain"]["agreement"] == 1.0 and results["int8"]["agreement"] == 1.0  # both answer "sums"
    assert all(r["latency_seconds"] > 0 for r in results.values())
    single = labels_of(client, "svd")
    assert [p["label"] for p in results["svd"]["predictions"]] == single
    expected = np.mean([a == b for a, b in zip(single, labels_of(client, "plain"))])
    assert 0 < expected < 1  # some texts agree, some do not: the figure is computed, not a constant
    assert results["svd"]["agreement"] == pytest.approx(expected)


def test_compare_defaults_to_the_uncompressed_variant_not_the_first_by_name(fake_client_for, tmp_path):
    client = fake_client_for(fake_variants(tmp_path, **{"a-svd": SPREAD, "z-plain": {}}))
    body = compare(client).json()
    assert body["reference"] == "z-plain"
    assert {r["model"]: r["agreement"] for r in body["results"]}["z-plain"] == 1.0
    only_svd = compare(client, models=["a-svd"]).json()  # the reference runs even when not listed
    assert only_svd["reference"] == "z-plain" and [r["model"] for r in only_svd["results"]] == ["a-svd"]
    assert compare(client, reference="a-svd").json()["reference"] == "a-svd"  # the request's field wins


def test_original_is_preferred_among_several_uncompressed_variants(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path, **{"a-plain": {}, "original": {}, "b-svd": SPREAD})
    assert compare(fake_client_for(folder)).json()["reference"] == "original"
    shutil.rmtree(folder / "original")
    assert compare(fake_client_for(folder)).json()["reference"] == "a-plain"  # else the first by name


def test_the_reference_setting_overrides_the_rule(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path, original={}, svd=SPREAD)
    assert compare(fake_client_for(folder, reference="svd")).json()["reference"] == "svd"


def test_without_an_uncompressed_variant_compare_asks_for_a_reference(fake_client_for, tmp_path, caplog):
    folder = fake_variants(tmp_path, svd=SPREAD, int8=INT8)
    with caplog.at_level(logging.WARNING, logger="slimserve"):
        client = fake_client_for(folder, shadow_rate=1.0)
    response = compare(client)
    assert response.status_code == 422 and response.json()["error_type"] == "validation"
    assert response.json()["error"].startswith("reference:")
    assert compare(client, reference="svd").status_code == 200
    # Shadow sampling is off, said once at startup, not per request: a request with no
    # reference to mirror to decides so before it answers.
    assert classify(client, "int8").status_code == 200
    metrics = client.get("/metrics").text
    assert "slimserve_shadow_inputs_total{" not in metrics and "slimserve_shadow_dropped_total{" not in metrics
    warnings = [r for r in caplog.records if "shadow" in r.getMessage()]
    assert len(warnings) == 1 and "shadow sampling is off" in warnings[0].getMessage()


def test_shadow_sampling_mirrors_to_the_uncompressed_variant_by_default(fake_client_for, tmp_path):
    client = fake_client_for(fake_variants(tmp_path, **{"a-svd": SPREAD, "z-plain": {}}), shadow_rate=1.0)
    assert classify(client, "z-plain").status_code == 200  # the reference is never mirrored to itself
    assert classify(client, "a-svd").status_code == 200
    wait_for_metric(client, "slimserve_shadow_inputs_total", len(TEXTS), model="a-svd")
    with pytest.raises(AssertionError, match="not in metrics"):
        metric_value(client.get("/metrics").text, "slimserve_shadow_inputs_total", model="z-plain")


def test_shadow_sampling_counts_agreement_with_the_reference(fake_client_for, tmp_path):
    client = fake_client_for(fake_variants(tmp_path, plain={}, svd=SPREAD), shadow_rate=1.0, reference="plain")
    assert classify(client, "svd").status_code == 200
    wait_for_metric(client, "slimserve_shadow_inputs_total", len(TEXTS), model="svd")
    text = client.get("/metrics").text
    agreed = sum(a == b for a, b in zip(labels_of(client, "svd"), labels_of(client, "plain")))
    assert 0 < agreed < len(TEXTS)
    assert metric_value(text, "slimserve_shadow_agreements_total", model="svd") == agreed
    assert metric_value(text, "slimserve_shadow_probability_difference_count", model="svd") == len(TEXTS)


def test_no_shadow_without_a_rate(fake_client):
    assert classify(fake_client, "svd").status_code == 200
    assert "slimserve_shadow_inputs_total{" not in fake_client.get("/metrics").text


def test_a_cascade_answers_what_it_is_unsure_of_with_the_reference(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path, plain={}, svd=SPREAD)
    (folder / "cascades.json").write_text(json.dumps({
        "always": {"fast": "svd", "reference": "plain", "threshold": 1.0},
        "never": {"fast": "svd", "reference": "plain", "threshold": 0.0},
        "some": {"fast": "svd", "reference": "plain", "threshold": 0.7},
    }))
    client = fake_client_for(folder, cascades={"by-env": {"fast": "svd", "reference": "nope", "threshold": 0.5}})
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["always"]["cascade"]["fast"] == "svd" and listed["always"]["state"] == "ready"
    assert listed["by-env"]["state"] == "failed" and "nope" in listed["by-env"]["reason"]
    reference = classify(client, "plain").json()["predictions"]
    fast = classify(client, "svd").json()["predictions"]
    assert classify(client, "always").json()["predictions"] == reference
    assert classify(client, "never").json()["predictions"] == fast
    unsure = [p["score"] < 0.7 for p in fast]
    assert 0 < sum(unsure) < len(TEXTS)
    assert classify(client, "some").json()["predictions"] == [r if u else f for f, r, u in zip(fast, reference, unsure)]
    broken = classify(client, "by-env")
    assert broken.status_code == 503 and "needs nope" in broken.json()["error"]
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_cascade_fallbacks_total", model="always") == len(TEXTS)
    assert metric_value(text, "slimserve_cascade_fallbacks_total", model="some") == sum(unsure)
    assert metric_value(text, "slimserve_cascade_inputs_total", model="never") == len(TEXTS)
    assert metric_value(text, "slimserve_requests_total", model="always", status="200") == 1


def queue_depth(client, name):
    """An awaitable reading of `name`'s slimserve_queue_depth (0 before its first request)."""
    async def depth() -> float:
        text = (await client.client.get("/metrics")).text
        return metric_value(text, "slimserve_queue_depth", model=name) if f'depth{{model="{name}"}}' in text else 0.0
    return depth


def test_reload_swaps_variants_while_requests_keep_answering(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path, plain={}, svd=SPREAD)
    client = fake_client_for(folder, admin_token="s3cret")
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 401
    shutil.copytree(folder / "plain", folder / "plain-copy")
    shutil.rmtree(folder / "svd")
    # Hold the old set's plain inside a run, so requests are in flight across the swap.
    old = client.backends["plain"]
    old.hold()
    loaded = len(old.entered)  # the run that checked its labels at load

    async def traffic_during_reload():
        requests = [asyncio.ensure_future(client.client.post("/v1/models/plain/classify", json={"inputs": ["a"]}))
                    for _ in range(20)]
        depth = queue_depth(client, "plain")

        async def all_in() -> bool:  # each request is in the held run or waits in the queue
            return sum(old.entered[loaded:]) + await depth() == 20

        await wait_until_async(all_in, "all 20 requests to reach the old set's plain")
        reload = asyncio.ensure_future(client.client.post("/admin/reload", headers={"authorization": "Bearer s3cret"}))

        async def swapped() -> bool:  # the new set serves; the old one drains what it holds
            return "plain-copy" in (await client.client.get("/v1/models")).text

        await wait_until_async(swapped, "the reload to swap in the new set")
        old.release()
        return await asyncio.gather(reload, *requests)

    reload, *answers = client.wait(traffic_during_reload())
    assert reload.status_code == 200 and reload.json()["models"]["plain-copy"] == "ready"
    assert [a.status_code for a in answers] == [200] * 20
    assert {m["name"] for m in client.get("/v1/models").json()["models"]} == {"plain", "plain-copy"}
    assert classify(client, "plain-copy").status_code == 200
    assert 'slimserve_model_ready{model="svd"}' not in client.get("/metrics").text


def test_a_failed_reload_keeps_the_running_set(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path / "models", plain={})
    client = fake_client_for(folder, admin_token="s3cret")
    shutil.rmtree(folder)
    response = client.post("/admin/reload", headers={"authorization": "Bearer s3cret"})
    assert response.status_code == 503 and "still serving" in response.json()["error"]
    assert classify(client, "plain").status_code == 200


def test_responses_carry_timing_and_digest_headers(fake_client, fake_models_dir):
    started = time.perf_counter()
    response = classify(fake_client, "plain")
    elapsed_ms = (time.perf_counter() - started) * 1000
    stages = [float(response.headers[f"x-{stage}-time"]) for stage in ("tokenization", "queue", "inference")]
    tokenization, queued, inference = stages
    assert tokenization > 0 and queued >= 0 and inference > 0 and sum(stages) <= elapsed_ms  # ms, within this request
    # The model and tokenizer files, not variant.json (docs/contracts.md, `digest`).
    files = "".join(f"{name} {hashlib.sha256((fake_models_dir / 'plain' / name).read_bytes()).hexdigest()}\n"
                    for name in ("model.onnx", "tokenizer.json"))
    assert response.headers["x-model-digest"] == f"sha256:{hashlib.sha256(files.encode()).hexdigest()}"


def test_a_full_queue_answers_429_with_retry_after(fake_client_for):
    client = fake_client_for(max_queue=1)
    model = client.backends["plain"]
    model.hold()

    def post():
        return client.client.post("/v1/models/plain/classify", json={"inputs": ["a"]})

    async def burst():
        running = asyncio.ensure_future(post())
        await wait_until_async(model.running.is_set, "the first request to reach the model")
        waiting = asyncio.ensure_future(post())
        depth = queue_depth(client, "plain")

        async def one_queued() -> bool:
            return await depth() == 1

        await wait_until_async(one_queued, "the second request to be queued")
        refused = [await post() for _ in range(4)]  # the queue is full: each is refused at once
        model.release()
        return [await running, await waiting], refused

    served, refused = client.wait(burst())
    assert [r.status_code for r in served] == [200, 200]
    assert [r.status_code for r in refused] == [429] * 4
    assert all(r.headers["retry-after"] == "1" and r.json()["error_type"] == "overloaded" for r in refused)
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_requests_total", model="plain", status="429") == 4


def test_queue_and_batch_metrics(fake_client):
    classify(fake_client, "plain")
    text = fake_client.get("/metrics").text
    assert metric_value(text, "slimserve_queue_duration_seconds_count", model="plain") == 1
    assert metric_value(text, "slimserve_queue_depth", model="plain") == 0
    assert metric_value(text, "slimserve_batch_size_sum", model="plain") == len(TEXTS)


def test_warmup_runs_every_shape_before_ready(fake_client_for):
    client = fake_client_for(warmup=True, max_batch_size=8, max_batch_tokens=256)
    assert client.get("/health/ready").status_code == 200
    # The run that checks the labels, then one per warm-up shape; no request has come yet.
    assert client.backends["plain"].shapes == [(1, 2), *warmup_shapes(64, 8, 256)]
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_model_warmup_seconds", model="plain") > 0


def test_a_shape_the_model_cannot_run_fails_the_load_not_the_first_request(fake_client_for, tmp_path):
    folder = fake_variants(tmp_path, short={"positions": 32}, plain={})
    listed = {m["name"]: m for m in fake_client_for(folder, warmup=True).get("/v1/models").json()["models"]}
    assert listed["plain"]["state"] == "ready"
    assert listed["short"]["state"] == "failed" and "over the 32 positions" in listed["short"]["reason"]
    unwarmed = {m["name"]: m for m in fake_client_for(folder).get("/v1/models").json()["models"]}
    assert unwarmed["short"]["state"] == "ready"  # without warm-up nothing ran it that long


@pytest.mark.parametrize("setting, provider", [("cuda", "CUDAExecutionProvider"),
                                               ("tensorrt", "TensorrtExecutionProvider")])
def test_a_gpu_provider_is_used_where_present_and_otherwise_the_cpu_says_so(make_client, tmp_path, caplog, setting,
                                                                             provider):
    import onnxruntime as ort

    folder = fake_variants(tmp_path, toy={})
    toy_graph(folder / "toy" / "model.onnx")  # ONNX Runtime opens a real graph
    with caplog.at_level(logging.WARNING, logger="slimserve.backend"):
        client = make_client(folder, partial(open_backend, provider=setting))
    entry = client.get("/v1/models/toy").json()
    assert entry["state"] == "ready"
    if provider in ort.get_available_providers():
        assert entry["runtime"]["device"] == provider and "serving on the CPU" not in caplog.text
    else:
        assert entry["runtime"]["device"] == "CPUExecutionProvider" and "serving on the CPU" in caplog.text


@pytest.mark.parametrize("recorded, setting, threads, parallel", [
    (None, None, 2, 1), (1, None, 1, 2), (1, 2, 2, 1), (4, None, 2, 1),
])
def test_threads_per_run_come_from_the_manifest_or_the_setting_within_the_budget(make_client, tmp_path, recorded,
                                                                                   setting, threads, parallel):
    from variant.manifest import Runtime, read_manifest, write_manifest

    folder = fake_variants(tmp_path, toy={})
    toy_graph(folder / "toy" / "model.onnx")
    manifest = read_manifest(folder / "toy")
    manifest.runtime = Runtime(threads=recorded)
    write_manifest(folder / "toy", manifest)
    client = make_client(folder, threads=2, intra_op_threads=setting)  # the default backends, under their budget
    runtime = client.get("/v1/models/toy").json()["runtime"]
    assert (runtime["threads"], runtime["parallel"]) == (threads, parallel)
    assert client.post("/v1/models/toy/classify", json={"inputs": ["a b c"]}).status_code == 200
