"""Deadlines (service/deadlines.py): a request still queued when its deadline passes is
answered 504 and its model never runs for it. The model is kept busy on an event
(tests/fakes.py's hold), never by sleeping; the only clock read is to make sure a
deadline has passed before the model is let go."""

import asyncio
import time

import numpy as np
import pytest
from conftest import metric_value, wait_until_async
from fakes import FakeBackend
from prometheus_client import generate_latest

from service.batching import Batcher, Limits
from service.errors import DeadlineExceeded
from service.inference import rows_of
from service.metrics import Metrics
from variant.tokenization import Row

TEXT = "a charming and often affecting journey"
CLASSIFY = "/v1/models/plain/classify"
V2_BODY = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
SOON = 0.001  # seconds: past by the time the request is seen queued


def queued(client, name: str, jobs: int):
    async def reached() -> bool:
        text = (await client.client.get("/metrics")).text
        return f'slimserve_queue_depth{{model="{name}"}}' in text and metric_value(
            text, "slimserve_queue_depth", model=name) == jobs
    return reached


def behind_a_busy_model(client, url: str, body: dict, headers: dict | None = None, timeout: float = SOON):
    """Keep `plain` busy with a job of one text handed to its batcher (so no deadline of
    the settings applies to it), send `url` meanwhile, and let the model go once that
    request has queued and `timeout` seconds have passed since; returns its answer."""
    variant = client.app.state.serving.variants["plain"]
    model = client.backends["plain"]
    model.hold()

    async def scenario():
        busy = asyncio.ensure_future(variant.batcher.submit(rows_of(variant, [TEXT], True)))
        await wait_until_async(model.running.is_set, "the first job to reach the model")
        late = asyncio.ensure_future(client.client.post(url, json=body, headers=headers or {}))
        await wait_until_async(queued(client, "plain", 1), "the request to queue")
        seen = time.perf_counter()
        await wait_until_async(lambda: time.perf_counter() - seen > timeout, "its deadline to pass")
        model.release()
        await busy
        return await late

    return client.wait(scenario())


@pytest.mark.parametrize("url, body, headers, settings", [
    (CLASSIFY, {"inputs": [TEXT]}, {"x-request-timeout": str(SOON)}, {}),
    (CLASSIFY, {"inputs": [TEXT], "timeout": SOON}, {}, {}),
    (CLASSIFY, {"inputs": [TEXT]}, {}, {"max_request_timeout_seconds": SOON}),
    (CLASSIFY, {"inputs": [TEXT]}, {"x-request-timeout": "3600"}, {"max_request_timeout_seconds": SOON}),
    (CLASSIFY, {"inputs": [TEXT], "timeout": 3600}, {"x-request-timeout": str(SOON)}, {}),
    ("/v2/models/plain/infer", V2_BODY, {"x-request-timeout": str(SOON)}, {}),
    ("/v1/rerank", {"model": "plain", "query": "what", "texts": [TEXT]}, {"x-request-timeout": str(SOON)}, {}),
    ("/v1/compare", {"inputs": [TEXT], "models": ["plain"]}, {"x-request-timeout": str(SOON)}, {}),
], ids=["header", "body", "server bound", "capped by the server", "the sooner wins", "v2", "rerank", "compare"])
def test_a_request_past_its_deadline_is_answered_504_and_never_runs(fake_client_for, url, body, headers, settings):
    client = fake_client_for(**settings)
    model = client.backends["plain"]
    runs = len(model.entered)  # the probe run at load
    late = behind_a_busy_model(client, url, body, headers)
    assert late.status_code == 504, late.text
    error = late.json()
    assert "deadline passed" in error["error"]
    assert set(error) == ({"error"} if url.startswith("/v2") else {"error", "error_type"})
    assert url.startswith("/v2") or error["error_type"] == "timeout"
    assert model.entered[runs:] == [1]  # the busy job's run only
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_deadline_exceeded_total", model="plain") == 1
    if url != "/v1/compare":  # compare runs several models and counts under none
        assert metric_value(text, "slimserve_requests_total", model="plain", status="504") == 1


def test_a_request_within_its_deadline_runs(fake_client_for):
    client = fake_client_for(max_request_timeout_seconds=3600)
    patient = behind_a_busy_model(client, CLASSIFY, {"inputs": [TEXT], "timeout": 3600})
    assert patient.status_code == 200
    assert 'slimserve_deadline_exceeded_total{model="plain"}' not in client.get("/metrics").text


@pytest.mark.parametrize("headers, body, names", [
    ({"x-request-timeout": "soon"}, {}, "x-request-timeout"),
    ({"x-request-timeout": "0"}, {}, "x-request-timeout"),
    ({"x-request-timeout": "-1"}, {}, "x-request-timeout"),
    ({"x-request-timeout": "inf"}, {}, "x-request-timeout"),
    ({"x-request-timeout": "nan"}, {}, "x-request-timeout"),
    ({}, {"timeout": 0}, "timeout"),
    ({}, {"timeout": "1"}, "timeout"),
    ({}, {"timeout": True}, "timeout"),
])
def test_a_bad_timeout_is_a_422_naming_it(fake_client, headers, body, names):
    for url, payload in ((CLASSIFY, {"inputs": [TEXT], **body}), ("/v2/models/plain/infer", V2_BODY)):
        if body and url != CLASSIFY:
            continue  # the body field is classify's
        response = fake_client.post(url, json=payload, headers=headers)
        assert response.status_code == 422, response.text
        assert names in response.json()["error"]


def test_a_split_request_past_its_deadline_is_dropped_whole_and_counted_once():
    def row(*ids: int) -> Row:
        return Row(np.array(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int64))

    async def scenario():
        backend, metrics = FakeBackend(), Metrics()
        batcher = Batcher("m", backend, 0, 128, Limits(max_batch_size=2), metrics)
        batcher.start()
        backend.hold()
        busy = asyncio.ensure_future(batcher.submit([row(1)]))
        await wait_until_async(backend.running.is_set, "the first job to reach the model")
        late = asyncio.ensure_future(batcher.submit([row(i) for i in range(1, 6)], deadline=time.perf_counter()))
        await wait_until_async(lambda: batcher.load() > 0, "the split request to queue")
        backend.release()
        await busy
        with pytest.raises(DeadlineExceeded):
            await late
        await batcher.stop()
        return backend.entered, metric_value(generate_latest(metrics.registry).decode(),
                                             "slimserve_deadline_exceeded_total", model="m")

    entered, exceeded = asyncio.run(scenario())
    assert entered == [1] and exceeded == 1  # three jobs of five rows, none run, one request counted
