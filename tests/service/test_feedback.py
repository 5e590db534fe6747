"""Labels that arrive later (service/feedback.py, POST /v1/feedback) over fake variants:
a request id on every model route, each label joined to what the service answered and
judged as variant/heads.py says, the outcomes counted per model and answered per item,
and the answers kept bounded by count and by age (an injected clock, no sleeps). That
live accuracy equals `compressor evaluate`'s on real variants: test_feedback_replay.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import fake_variants, metric_value

TAGS = ("plot", "acting", "music")
VARIANTS = {
    "plain": {"answers": "spread"},
    "svd": {"method": "svd", "answers": "spread", "salt": 1},
    "tags": {"task": "multi_label", "labels": TAGS, "answers": "spread", "salt": 2},
    "similarity": {"task": "regression", "labels": ("similarity",), "answers": "spread"},
}
CASCADES = {"both": {"fast": "svd", "reference": "plain", "threshold": 0.7}}
TEXTS = ["fine", "wooden acting", "stocks rallied after the central bank held rates steady"]
FRESH_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return fake_variants(tmp_path_factory.mktemp("feedback"), **VARIANTS)


@pytest.fixture
def client(fake_client_for, folder):
    return fake_client_for(folder, cascades=CASCADES)


def classify(client, name, inputs=TEXTS, **headers):
    response = client.post(f"/v1/models/{name}/classify", json={"inputs": inputs}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"] == body["id"]
    return body["id"], body["predictions"]


def send(client, *items):
    response = client.post("/v1/feedback", json={"feedback": list(items)})
    assert response.status_code == 200, response.text
    return response.json()


def statuses(answer):
    return [(r["index"], r["model"], r["status"]) for r in answer["results"]]


def other(label):
    return {"negative": "positive", "positive": "negative"}[label]


def metric(client, name, **labels):
    return metric_value(client.get("/metrics").text, name, **labels)


def test_every_model_route_answers_under_a_fresh_request_id(client):
    ids = [classify(client, "plain")[0]]
    v2 = client.post("/v2/models/plain/infer", json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]})
    rerank = client.post("/v1/rerank", json={"model": "plain", "query": "is it fine", "texts": TEXTS})
    compare = client.post("/v1/compare", json={"inputs": TEXTS, "models": ["svd"]})
    for response in (v2, rerank, compare):
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-request-id"])
    assert all(FRESH_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize(("sent", "kept"), [("order-42.a:b_C", True), ("has space", False), ("x" * 129, False),
                                            ("", False), ("<id>", False)])
def test_a_plain_client_id_is_answered_under_and_any_other_replaced(client, sent, kept):
    request_id, predictions = classify(client, "plain", **{"x-request-id": sent})
    assert (request_id == sent) if kept else FRESH_ID.fullmatch(request_id)
    answer = send(client, {"id": request_id, "label": predictions[0]["label"]})
    assert statuses(answer) == [(0, "plain", "correct")]


def test_a_label_is_judged_against_the_answer_given_and_moves_the_gauge(client):
    request_id, predictions = classify(client, "plain")
    first = send(client, {"id": request_id, "label": predictions[0]["label"]})  # index 0 by default
    assert first == {"results": [{"id": request_id, "index": 0, "model": "plain", "status": "correct"}], "accepted": 1}
    assert metric(client, "slimserve_feedback_accuracy", model="plain") == 1.0
    second = send(client, {"id": request_id, "index": 2, "label": other(predictions[2]["label"])},
                  {"id": request_id, "index": 1, "label": predictions[1]["label"]})
    assert statuses(second) == [(2, "plain", "wrong"), (1, "plain", "correct")] and second["accepted"] == 2
    assert metric(client, "slimserve_feedback_accuracy", model="plain") == pytest.approx(2 / 3)
    assert metric(client, "slimserve_feedback_total", model="plain", outcome="correct") == 2
    assert metric(client, "slimserve_feedback_total", model="plain", outcome="wrong") == 1


def test_on_a_tie_the_label_shown_is_the_one_judged(client):
    request_id, [prediction] = classify(client, "plain", ["ok"])
    assert set(prediction["scores"].values()) == {0.5} and prediction["label"] == "negative"  # the first label
    assert statuses(send(client, {"id": request_id, "label": "negative"})) == [(0, "plain", "correct")]


def test_a_mixed_batch_is_answered_item_by_item_and_never_fails_whole(client):
    request_id, predictions = classify(client, "plain")
    label = predictions[0]["label"]
    answer = send(client,
                  {"id": request_id, "label": label},
                  {"id": "never-answered", "label": label},
                  {"id": request_id, "index": len(TEXTS), "label": label},  # no such input
                  {"id": request_id, "label": "neutral"},
                  {"id": request_id, "label": [label]},
                  {"id": request_id, "label": 1},
                  {"id": request_id, "index": 1, "label": other(predictions[1]["label"])})
    assert statuses(answer) == [(0, "plain", "correct"), (0, None, "unknown_id"), (3, "plain", "unknown_id"),
                                (0, "plain", "bad_label"), (0, "plain", "bad_label"), (0, "plain", "bad_label"),
                                (1, "plain", "wrong")]
    assert answer["accepted"] == 2
    assert metric(client, "slimserve_feedback_total", model="_unknown", outcome="unknown_id") == 1
    assert metric(client, "slimserve_feedback_total", model="plain", outcome="unknown_id") == 1
    assert metric(client, "slimserve_feedback_total", model="plain", outcome="bad_label") == 3
    assert metric(client, "slimserve_feedback_accuracy", model="plain") == 0.5  # the bad labels count for nothing


def test_multi_label_accuracy_is_the_share_of_label_decisions_right(client):
    request_id, predictions = classify(client, "tags")
    on = [p["labels"] for p in predictions]
    flipped = sorted(set(on[1]) ^ {"plot"})  # one of the three decisions now disagrees
    answer = send(client, {"id": request_id, "index": 0, "label": on[0]}, {"id": request_id, "index": 1, "label": flipped},
                  {"id": request_id, "index": 2, "label": on[2][0]}, {"id": request_id, "index": 2, "label": ["sound"]})
    assert statuses(answer) == [(0, "tags", "correct"), (1, "tags", "wrong"), (2, "tags", "bad_label"),
                                (2, "tags", "bad_label")]
    assert metric(client, "slimserve_feedback_accuracy", model="tags") == pytest.approx(5 / 6)


def test_a_regression_model_publishes_its_mean_absolute_error(client):
    request_id, predictions = classify(client, "similarity")
    scores = [p["score"] for p in predictions]
    answer = send(client, {"id": request_id, "index": 0, "label": scores[0] + 0.5},
                  {"id": request_id, "index": 1, "label": scores[1] - 0.25}, {"id": request_id, "index": 2, "label": "high"})
    assert statuses(answer) == [(0, "similarity", "scored"), (1, "similarity", "scored"), (2, "similarity", "bad_label")]
    assert answer["accepted"] == 2
    for label in ("NaN", "Infinity", "1" + "0" * 400, '["0.5"]'):  # JSON Python reads, but no finite number
        response = client.post("/v1/feedback", content=f'{{"feedback": [{{"id": "{request_id}", "label": {label}}}]}}',
                               headers={"content-type": "application/json"})
        assert statuses(response.json()) == [(0, "similarity", "bad_label")], label
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_feedback_error", model="similarity") == pytest.approx(0.375)
    assert 'slimserve_feedback_accuracy{model="similarity"}' not in text


def test_compare_files_every_variant_it_answered_with_under_one_id(client):
    response = client.post("/v1/compare", json={"inputs": TEXTS, "models": ["plain", "svd"], "reference": "plain"})
    results = {r["model"]: r["predictions"] for r in response.json()["results"]}
    assert results["plain"][0]["label"] != results["svd"][0]["label"]  # they disagree on "fine"
    answer = send(client, {"id": response.headers["x-request-id"], "label": results["plain"][0]["label"]})
    assert statuses(answer) == [(0, "plain", "correct"), (0, "svd", "wrong")] and answer["accepted"] == 1
    assert metric(client, "slimserve_feedback_accuracy", model="svd") == 0.0


def test_a_cascades_answers_count_under_the_cascade(client):
    request_id, predictions = classify(client, "both")
    answer = send(client, {"id": request_id, "label": predictions[0]["label"]})
    assert statuses(answer) == [(0, "both", "correct")]
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_feedback_accuracy", model="both") == 1.0
    assert 'slimserve_feedback_total{model="svd"' not in text


def test_rerank_and_v2_answers_are_addressed_by_input_index(client):
    texts = ["fine", "wooden acting"]
    rerank = client.post("/v1/rerank", json={"model": "plain", "query": "is it fine", "texts": texts})
    # A two-class model ranks by its second class's probability; above one half it is the top-1.
    truth = {r["index"]: "positive" if r["score"] > 0.5 else "negative" for r in rerank.json()}
    answer = send(client, *({"id": rerank.headers["x-request-id"], "index": i, "label": truth[i]} for i in (1, 0)))
    assert statuses(answer) == [(1, "plain", "correct"), (0, "plain", "correct")]
    v2 = client.post("/v2/models/svd/infer", json={"inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}], "outputs": [{"name": "probabilities"}]})
    probabilities = np.array(v2.json()["outputs"][0]["data"]).reshape(2, 2)
    top = [("negative", "positive")[i] for i in probabilities.argmax(axis=1)]
    answer = send(client, {"id": v2.headers["x-request-id"], "index": 1, "label": other(top[1])})
    assert statuses(answer) == [(1, "svd", "wrong")]


@pytest.mark.parametrize(("body", "field"), [
    ({"feedback": []}, "feedback"),
    ({"feedback": [{"id": "a"}]}, "feedback.0.label"),
    ({"feedback": [{"label": "positive"}]}, "feedback.0.id"),
    ({"feedback": [{"id": "a", "label": True}]}, "feedback.0.label"),
    ({"feedback": [{"id": "a", "label": {"name": "positive"}}]}, "feedback.0.label"),
    ({"feedback": [{"id": "a", "index": -1, "label": "positive"}]}, "feedback.0.index"),
    ({"feedback": [{"id": "a", "label": "positive", "model": "plain"}]}, "feedback.0.model"),
    ({"feedback": [{"id": "a", "label": "positive"}] * 1001}, "feedback"),
    ({"labels": []}, "feedback"),
])
def test_only_a_malformed_body_is_refused_naming_the_field(client, body, field):
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation" and response.json()["error"].startswith(f"{field}:")


def test_the_oldest_answers_go_once_the_ring_is_full(fake_client_for, folder):
    client = fake_client_for(folder, feedback_capacity=3)
    answered = [classify(client, "plain", [text]) for text in TEXTS + ["ok", "a charming film"]]
    assert len(client.app.state.feedback) == 3
    answer = send(client, *({"id": i, "label": p[0]["label"]} for i, p in answered))
    assert [r["status"] for r in answer["results"]] == ["unknown_id"] * 2 + ["correct"] * 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answers_older_than_the_ttl_are_expired_then_forgotten(fake_client_for, folder):
    client = fake_client_for(folder, feedback_capacity=2, feedback_ttl_seconds=60)
    clock = client.app.state.feedback.clock = Clock()
    old, predictions = classify(client, "plain")
    clock.now += 60
    assert statuses(send(client, {"id": old, "label": predictions[0]["label"]})) == [(0, "plain", "correct")]
    clock.now += 1
    late = send(client, {"id": old, "label": predictions[0]["label"]})
    assert statuses(late) == [(0, "plain", "expired")] and late["accepted"] == 0
    assert metric(client, "slimserve_feedback_total", model="plain", outcome="expired") == 1
    newer = [classify(client, "svd")[0] for _ in range(2)]
    assert len(client.app.state.feedback) == 2  # the old answers left the ring, their name stays a while
    assert statuses(send(client, {"id": old, "label": "positive"})) == [(0, "plain", "expired")]
    clock.now += 61
    classify(client, "plain")  # the two newer ones expire: the oldest expired id is forgotten
    assert len(client.app.state.feedback) == 1
    answer = send(client, {"id": old, "label": "positive"}, *({"id": i, "label": "positive"} for i in newer))
    assert statuses(answer) == [(0, None, "unknown_id"), (0, "svd", "expired"), (0, "svd", "expired")]
