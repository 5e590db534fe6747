"""The service reads each head as its task says (variant/heads.py), on fake variants
(tests/fakes.py) whose logits the test computes too: multi-label sigmoids and the
threshold setting, a regression's score, the v2 outputs per task, /v1/rerank, and
compare, shadow sampling and cascades only between heads that can be compared. That the
exported graphs compute those logits: tests/compressor/test_task_heads.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_variants, metric_value, wait_for_metric
from fakes import fake_logits

from variant import heads

QUERY = "is the film charming"
PASSAGES = ["it's a charming and often affecting journey.", "stocks rallied after the central bank held rates steady",
            "the plot is thin and the acting is wooden", "a quietly devastating film that lingers"]
PAIRS = [(QUERY, p) for p in PASSAGES]
TAGS = ("plot", "acting", "music")
VARIANTS = {
    # On PASSAGES: 2, 2, 3 and 0 labels on; tags-other decides 2 of the 4 × 3 alike.
    "tags": {"task": "multi_label", "labels": TAGS, "answers": "spread", "salt": 2},
    "tags-other": {"task": "multi_label", "labels": TAGS, "answers": "spread", "salt": 3},
    "similarity": {"task": "regression", "labels": ("similarity",), "answers": "spread"},
    "pairs": {"labels": ("different", "same"), "answers": "spread"},
    "three": {"labels": ("a", "b", "c"), "answers": "spread"},
}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return fake_variants(tmp_path_factory.mktemp("tasks"), **VARIANTS)


@pytest.fixture
def tasks_client(fake_client_for, tasks_dir):
    return fake_client_for(tasks_dir)


def classify(client, name, inputs=PASSAGES):
    response = client.post(f"/v1/models/{name}/classify", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_multi_label_is_served_with_a_sigmoid_per_label_and_a_threshold(tasks_client, tasks_dir):
    expected = heads.sigmoid(fake_logits(tasks_dir / "tags", PASSAGES).astype(np.float64))
    predictions = classify(tasks_client, "tags")
    for row, p in zip(expected, predictions):
        assert set(p["scores"]) == set(TAGS)  # every label's score
        assert [p["scores"][label] for label in TAGS] == pytest.approx(row)
        assert p["labels"] == [TAGS[i] for i in np.argsort(-row, kind="stable") if row[i] >= 0.5]
        assert p["label"] == TAGS[int(row.argmax())]
    assert any(0 < len(p["labels"]) < 3 for p in predictions)  # the threshold decided something


def test_the_threshold_is_a_setting(fake_client_for, tasks_dir):
    expected = heads.sigmoid(fake_logits(tasks_dir / "tags", PASSAGES).astype(np.float64))
    counts = [len(p["labels"]) for p in classify(fake_client_for(tasks_dir, multi_label_threshold=0.8), "tags")]
    assert counts == [int((row >= 0.8).sum()) for row in expected]
    assert counts != [int((row >= 0.5).sum()) for row in expected]  # the setting, not the default, decided


def test_regression_returns_the_score_itself(tasks_client, tasks_dir):
    expected = fake_logits(tasks_dir / "similarity", PASSAGES)[:, 0]
    predictions = classify(tasks_client, "similarity")
    assert [p["score"] for p in predictions] == pytest.approx(expected)
    assert all(p["label"] == "similarity" and "labels" not in p for p in predictions)


def infer(client, name: str, **request) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": "text", "shape": [len(PASSAGES)], "datatype": "BYTES", "data": PASSAGES}], **request}
    response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


def test_v2_outputs_fit_each_task(tasks_client, tasks_dir):
    logits = fake_logits(tasks_dir / "tags", PASSAGES)
    tags = infer(tasks_client, "tags")
    assert set(tags) == {"logits", "probabilities"}
    assert tags["logits"] == pytest.approx(logits)
    assert tags["probabilities"] == pytest.approx(heads.sigmoid(logits.astype(np.float64)), abs=1e-6)
    similarity = infer(tasks_client, "similarity")
    assert set(similarity) == {"logits", "scores"}
    assert similarity["scores"][:, 0] == pytest.approx(fake_logits(tasks_dir / "similarity", PASSAGES)[:, 0])
    meta = tasks_client.get("/v2/models/similarity").json()
    assert [o["name"] for o in meta["outputs"]] == ["logits", "scores"] and meta["parameters"]["task"] == "regression"
    wrong = tasks_client.post("/v2/models/similarity/infer", json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}],
        "outputs": [{"name": "probabilities"}]})
    assert wrong.status_code == 422 and "choose from logits, scores" in wrong.json()["error"]


# --- /v1/rerank ------------------------------------------------------------------------

def rerank(client, **body):
    return client.post("/v1/rerank", json={"query": QUERY, "texts": PASSAGES, **body})


def test_rerank_orders_passages_by_the_cross_encoders_score(tasks_client, tasks_dir):
    expected = fake_logits(tasks_dir / "similarity", PAIRS)[:, 0].astype(np.float64)  # the pairs, not the passages
    assert len(set(expected)) == len(PASSAGES)  # an order to get right
    ranked = rerank(tasks_client, model="similarity", raw_scores=True).json()
    assert [r["index"] for r in ranked] == list(np.argsort(-expected))
    assert [r["score"] for r in ranked] == pytest.approx(sorted(expected, reverse=True))
    assert all("text" not in r for r in ranked)
    # By default the score is a probability, as text-embeddings-inference gives it; the order is the same.
    default = rerank(tasks_client, model="similarity").json()
    assert [r["index"] for r in default] == [r["index"] for r in ranked]
    assert [r["score"] for r in default] == pytest.approx(heads.sigmoid(np.sort(expected)[::-1]))


def test_rerank_top_n_and_return_text(tasks_client):
    ranked = rerank(tasks_client, model="similarity", top_n=2, return_text=True).json()
    assert len(ranked) == 2 and all(r["text"] == PASSAGES[r["index"]] for r in ranked)


def test_rerank_with_a_two_class_model_ranks_by_the_positive_class(tasks_client, tasks_dir):
    positive = heads.softmax(fake_logits(tasks_dir / "pairs", PAIRS).astype(np.float64))[:, 1]
    ranked = rerank(tasks_client, model="pairs").json()
    assert [r["score"] for r in ranked] == pytest.approx(sorted(positive, reverse=True))
    assert [positive[r["index"]] for r in ranked] == pytest.approx([r["score"] for r in ranked])


def test_rerank_is_counted_per_model(tasks_client):
    assert rerank(tasks_client, model="similarity").status_code == 200
    text = tasks_client.get("/metrics").text
    assert metric_value(text, "slimserve_requests_total", model="similarity", status="200") == 1


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"model": "three"}, 422, "'three' is a single_label model with 3 labels"),
    ({"model": "tags"}, 422, "'tags' is a multi_label model with 3 labels"),
    ({}, 422, "model: name the model that scores"),
    ({"model": "nope"}, 404, "'nope' not found"),
    ({"model": "similarity", "texts": []}, 400, "texts must hold at least one text"),
    ({"model": "similarity", "texts": ["x" * 30_000]}, 413, "texts[0] holds"),
    ({"model": "similarity", "query": 3}, 422, "query"),
    ({"model": "similarity", "top_n": 0}, 422, "top_n"),
    ({"model": "similarity", "truncation_direction": "Left"}, 422, "truncation_direction"),
])
def test_rerank_refusals(tasks_client, body, status, message):
    response = rerank(tasks_client, **body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_rerank_picks_the_only_serving_model(fake_client_for, tmp_path):
    client = fake_client_for(fake_variants(tmp_path, similarity=VARIANTS["similarity"]))
    ranked = client.post("/v1/rerank", json={"query": QUERY, "texts": PASSAGES}).json()
    assert sorted(r["index"] for r in ranked) == list(range(len(PASSAGES)))


# --- compare, shadow sampling and cascades between heads ---------------------------------

def label_decisions(folder, inputs=PASSAGES) -> np.ndarray:
    return fake_logits(folder, inputs) >= 0  # a sigmoid at or above 0.5


def test_compare_defaults_to_the_variants_with_the_references_head(tasks_client, tasks_dir):
    body = tasks_client.post("/v1/compare", json={"inputs": PASSAGES, "reference": "tags"}).json()
    results = {r["model"]: r for r in body["results"]}
    assert sorted(results) == ["tags", "tags-other"]
    alike = label_decisions(tasks_dir / "tags") == label_decisions(tasks_dir / "tags-other")
    assert results["tags-other"]["agreement"] == pytest.approx(alike.mean())  # per (input, label) decision
    assert 0 < alike.mean() < 1


def test_compare_refuses_variants_with_other_heads(tasks_client):
    response = tasks_client.post("/v1/compare", json={"inputs": ["ok"], "models": ["tags"], "reference": "three"})
    assert response.status_code == 422 and "cannot be compared" in response.json()["error"]
    same = tasks_client.post("/v1/compare", json={"inputs": PASSAGES, "models": ["similarity"],
                                                  "reference": "similarity"}).json()
    assert same["results"][0]["agreement"] == pytest.approx(1.0) and same["results"][0]["mae"] == 0.0


def test_shadow_counts_per_label_agreement_for_multi_label(fake_client_for, tasks_dir):
    client = fake_client_for(tasks_dir, shadow_rate=1.0, reference="tags")
    classify(client, "similarity")  # another head: not mirrored, counted as dropped at once
    classify(client, "tags-other")
    wait_for_metric(client, "slimserve_shadow_inputs_total", len(PASSAGES), model="tags-other")
    text = client.get("/metrics").text
    alike = label_decisions(tasks_dir / "tags") == label_decisions(tasks_dir / "tags-other")
    expected = float(alike.mean(axis=1).sum())
    assert expected not in (0.0, float(len(PASSAGES)))  # a fraction of the labels: the test can tell
    assert metric_value(text, "slimserve_shadow_agreements_total", model="tags-other") == pytest.approx(expected)
    assert metric_value(text, "slimserve_shadow_dropped_total", model="similarity") == len(PASSAGES)


def test_cascades_need_single_label_variants(fake_client_for, tasks_dir):
    client = fake_client_for(tasks_dir, cascades={"c": {"fast": "tags", "reference": "tags-other", "threshold": 0.9}})
    response = client.post("/v1/models/c/classify", json={"inputs": ["ok"]})
    assert response.status_code == 503 and "cascades need single_label variants" in response.json()["error"]
