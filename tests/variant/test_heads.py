"""Heads by task (service/heads.py): multi-label and regression checkpoints exported and
served with the right activations over v1 and v2, /v1/rerank on a tiny cross-encoder,
and agreement per task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, wordpiece_tokenizer

from compressor.errors import InputError
from variant import heads
from variant.manifest import read_manifest

QUERY = "is the film charming"
PASSAGES = ["it's a charming and often affecting journey.", "stocks rallied after the central bank held rates steady",
            "the plot is thin and the acting is wooden", "a quietly devastating film that lingers"]
TAGS = {0: "plot", 1: "acting", 2: "music"}


# --- the rules, on numbers ------------------------------------------------------------

def test_task_comes_from_problem_type_then_from_the_label_count():
    assert heads.task_of("multi_label_classification", 3) == "multi_label"
    assert heads.task_of("regression", 1) == "regression"
    assert heads.task_of(None, 1) == "regression"
    assert heads.task_of(None, 2) == "single_label"
    assert heads.task_of("single_label_classification", 2) == "single_label"


def test_activations_per_task():
    logits = np.array([[2.0, -1.0, 0.0]])
    assert heads.activate("single_label", logits).sum() == pytest.approx(1.0)
    assert heads.activate("multi_label", logits) == pytest.approx(1 / (1 + np.exp(-logits)))
    assert heads.activate("regression", logits[:, :1]) == pytest.approx(np.array([[2.0]]))
    assert heads.activate("multi_label", np.array([[1000.0, -1000.0]])) == pytest.approx(np.array([[1.0, 0.0]]))


def test_agreement_per_task():
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    b = np.array([[0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    assert heads.agreement("single_label", a, b) == {"agreement": pytest.approx(2 / 3)}
    # multi_label: 6 decisions at 0.5; rows 0 and 2 agree on both labels, row 1 on neither.
    assert heads.agreement("multi_label", a, b) == {"agreement": pytest.approx(4 / 6)}
    assert heads.agreement("multi_label", a, b, threshold=0.65)["agreement"] == pytest.approx(5 / 6)
    x = np.array([[1.0], [2.0], [3.0]])
    figures = heads.agreement("regression", x * 2 + 1, x)
    assert figures["agreement"] == pytest.approx(1.0) and figures["mae"] == pytest.approx(3.0)
    assert heads.agreement("regression", -x, x)["agreement"] == pytest.approx(-1.0)


def test_relevance_column_per_head():
    assert heads.relevance("regression", 1) == 0
    assert heads.relevance("multi_label", 1) == 0
    assert heads.relevance("single_label", 2) == 1
    assert heads.relevance("single_label", 3) is None
    assert heads.relevance("multi_label", 3) is None


# --- tiny checkpoints with each head --------------------------------------------------

def save_head(folder: Path, problem_type: str | None, labels: dict[int, str], seed: int = 1) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = wordpiece_tokenizer(with_types=True)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, problem_type=problem_type,
                        id2label=labels, label2id={v: k for k, v in labels.items()}, **TINY)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # spread the head's outputs so thresholds and rankings are exercised
        model.classifier.weight.mul_(40)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def head_models(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    pytest.importorskip("torch")
    from compressor.pipeline import Recipe, compress

    root = tmp_path_factory.mktemp("heads")
    checkpoints = {
        "tags": save_head(root / "tags", "multi_label_classification", TAGS),
        "tags-other": save_head(root / "tags-other", "multi_label_classification", TAGS, seed=2),
        "similarity": save_head(root / "similarity", None, {0: "similarity"}),
        "pairs": save_head(root / "pairs", "single_label_classification", {0: "different", 1: "same"}),
        "three": save_head(root / "three", None, {0: "a", 1: "b", 2: "c"}),
    }
    out = root / "models"
    for name, folder in checkpoints.items():
        compress(str(folder), Recipe(name), out)
    return out, checkpoints


def torch_logits(checkpoint: Path, inputs: list) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    with torch.no_grad():
        return model(**tokenizer(inputs, padding=True, return_tensors="pt")).logits.numpy()


@pytest.fixture
def heads_client(make_client, head_models):
    return make_client(head_models[0])


def test_the_manifest_records_the_task(head_models):
    out, _ = head_models
    assert {n: read_manifest(out / n).task for n in ("tags", "similarity", "pairs", "three")} == {
        "tags": "multi_label", "similarity": "regression", "pairs": "single_label", "three": "single_label"}


def test_multi_label_is_served_with_a_sigmoid_per_label_and_a_threshold(heads_client, head_models):
    expected = 1 / (1 + np.exp(-torch_logits(head_models[1]["tags"], PASSAGES)))
    body = heads_client.post("/v1/models/tags/classify", json={"inputs": PASSAGES}).json()
    for row, p in zip(expected, body["predictions"]):
        assert set(p["scores"]) == set(TAGS.values())  # every label's score
        assert [p["scores"][TAGS[i]] for i in range(3)] == pytest.approx(row, abs=1e-5)
        assert p["labels"] == [TAGS[i] for i in np.argsort(-row) if row[i] >= 0.5]
        assert p["label"] == TAGS[int(row.argmax())]
    assert any(0 < len(p["labels"]) < 3 for p in body["predictions"])  # the threshold decided something


def test_the_threshold_is_a_setting(make_client, head_models):
    client = make_client(head_models[0], multi_label_threshold=0.999)
    expected = 1 / (1 + np.exp(-torch_logits(head_models[1]["tags"], PASSAGES)))
    body = client.post("/v1/models/tags/classify", json={"inputs": PASSAGES}).json()
    counts = [len(p["labels"]) for p in body["predictions"]]
    assert counts == [int((row >= 0.999).sum()) for row in expected]
    assert counts != [int((row >= 0.5).sum()) for row in expected]  # the setting, not the default, decided


def test_regression_returns_the_score_itself(heads_client, head_models):
    expected = torch_logits(head_models[1]["similarity"], PASSAGES)[:, 0]
    body = heads_client.post("/v1/models/similarity/classify", json={"inputs": PASSAGES}).json()
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected, abs=1e-5)
    assert all(p["label"] == "similarity" and "labels" not in p for p in body["predictions"])


def test_v2_outputs_fit_each_task(heads_client, head_models):
    def infer(name: str) -> dict:
        body = {"inputs": [{"name": "text", "shape": [len(PASSAGES)], "datatype": "BYTES", "data": PASSAGES}]}
        response = heads_client.post(f"/v2/models/{name}/infer", json=body)
        assert response.status_code == 200, response.text
        return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}

    logits = torch_logits(head_models[1]["tags"], PASSAGES)
    tags = infer("tags")
    assert tags["probabilities"] == pytest.approx(1 / (1 + np.exp(-logits)), abs=1e-5)
    similarity = infer("similarity")
    assert set(similarity) == {"logits", "scores"}
    assert similarity["scores"][:, 0] == pytest.approx(torch_logits(head_models[1]["similarity"], PASSAGES)[:, 0],
                                                       abs=1e-4)
    meta = heads_client.get("/v2/models/similarity").json()
    assert [o["name"] for o in meta["outputs"]] == ["logits", "scores"] and meta["parameters"]["task"] == "regression"
    wrong = heads_client.post("/v2/models/similarity/infer", json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}],
        "outputs": [{"name": "probabilities"}]})
    assert wrong.status_code == 422
    assert "choose from logits, scores" in wrong.json()["error"]


# --- /v1/rerank -------------------------------------------------------------------------

def test_rerank_orders_passages_by_the_cross_encoders_score(heads_client, head_models):
    expected = torch_logits(head_models[1]["similarity"], [(QUERY, p) for p in PASSAGES])[:, 0]
    response = heads_client.post("/v1/rerank", json={"model": "similarity", "query": QUERY, "texts": PASSAGES,
                                                     "raw_scores": True})
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert [r["index"] for r in ranked] == list(np.argsort(-expected))
    assert [r["score"] for r in ranked] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
    assert all("text" not in r for r in ranked)
    # By default the score is a probability, as text-embeddings-inference gives it; the order is the same.
    default = heads_client.post("/v1/rerank", json={"model": "similarity", "query": QUERY, "texts": PASSAGES}).json()
    assert [r["index"] for r in default] == [r["index"] for r in ranked]
    assert [r["score"] for r in default] == pytest.approx(1 / (1 + np.exp(-np.sort(expected)[::-1])), abs=1e-5)


def test_rerank_top_n_and_return_text(heads_client):
    ranked = heads_client.post("/v1/rerank", json={"model": "similarity", "query": QUERY, "texts": PASSAGES,
                                                   "top_n": 2, "return_text": True}).json()
    assert len(ranked) == 2 and all(r["text"] == PASSAGES[r["index"]] for r in ranked)


def test_rerank_with_a_two_class_model_ranks_by_the_positive_class(heads_client, head_models):
    logits = torch_logits(head_models[1]["pairs"], [(QUERY, p) for p in PASSAGES])
    positive = heads.softmax(logits)[:, 1]
    ranked = heads_client.post("/v1/rerank", json={"model": "pairs", "query": QUERY, "texts": PASSAGES}).json()
    assert [r["score"] for r in ranked] == pytest.approx(sorted(positive, reverse=True), abs=1e-5)


def test_rerank_is_counted_per_model(heads_client):
    heads_client.post("/v1/rerank", json={"model": "similarity", "query": QUERY, "texts": PASSAGES})
    metrics = heads_client.get("/metrics").text
    assert 'slimserve_requests_total{model="similarity",status="200"}' in metrics


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"model": "three", "query": QUERY, "texts": PASSAGES}, 422, "'three' is a single_label model with 3 labels"),
    ({"model": "tags", "query": QUERY, "texts": PASSAGES}, 422, "'tags' is a multi_label model with 3 labels"),
    ({"query": QUERY, "texts": PASSAGES}, 422, "model: name the model that scores"),
    ({"model": "nope", "query": QUERY, "texts": PASSAGES}, 404, "'nope' not found"),
    ({"model": "similarity", "query": QUERY, "texts": []}, 400, "texts must hold at least one text"),
    ({"model": "similarity", "query": QUERY, "texts": ["x" * 30_000]}, 413, "texts[0] holds"),
    ({"model": "similarity", "query": 3, "texts": PASSAGES}, 422, "query"),
    ({"model": "similarity", "query": QUERY, "texts": PASSAGES, "top_n": 0}, 422, "top_n"),
    ({"model": "similarity", "query": QUERY, "texts": PASSAGES, "truncation_direction": "Left"}, 422,
     "truncation_direction"),
])
def test_rerank_refusals(heads_client, body, status, message):
    response = heads_client.post("/v1/rerank", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_rerank_picks_the_only_serving_model(make_client, head_models, tmp_path):
    import shutil

    shutil.copytree(head_models[0] / "similarity", tmp_path / "similarity")
    client = make_client(tmp_path)
    ranked = client.post("/v1/rerank", json={"query": QUERY, "texts": PASSAGES}).json()
    assert sorted(r["index"] for r in ranked) == list(range(len(PASSAGES)))


# --- agreement per task in the compressor and the service --------------------------

def test_evaluate_scores_regression_by_correlation(head_models, tmp_path):
    from compressor.evaluate import evaluate_all

    out, checkpoints = head_models
    values = torch_logits(checkpoints["similarity"], PASSAGES)[:, 0] * 3 + 1  # a perfect linear fit
    data = tmp_path / "sts.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{v:.6f}\n" for t, v in zip(PASSAGES, values)))
    [result] = evaluate_all([out / "similarity"], data, out / "similarity", threads=1)
    assert result["task"] == "regression"
    assert result["pearson"] == pytest.approx(1.0, abs=1e-4) and "accuracy" not in result
    assert result["agreement"] == pytest.approx(1.0) and result["mae"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_scores_multi_label_decisions(head_models, tmp_path):
    from compressor.evaluate import evaluate_all

    out, checkpoints = head_models
    on = 1 / (1 + np.exp(-torch_logits(checkpoints["tags"], PASSAGES))) >= 0.5
    cells = [",".join(TAGS[i] for i in np.flatnonzero(row)) for row in on]
    cells[0] = ",".join(TAGS[i] for i in range(3) if not on[0, i])  # every decision of row 0 wrong
    data = tmp_path / "tags.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{c}\n" for t, c in zip(PASSAGES, cells)))
    [result] = evaluate_all([out / "tags"], data, None, threads=1)
    assert result["accuracy"] == pytest.approx(1 - 3 / (3 * len(PASSAGES)), abs=1e-4)


def test_evaluate_refuses_a_reference_with_another_head(head_models, tmp_path):
    from compressor.evaluate import evaluate_all

    out, _ = head_models
    data = tmp_path / "d.tsv"
    data.write_text("sentence\n" + "".join(f"{t}\n" for t in PASSAGES))
    with pytest.raises(InputError, match="'tags' \\(multi_label, 3 labels\\) cannot be compared"):
        evaluate_all([out / "tags"], data, out / "similarity", threads=1)


def test_old_manifests_read_their_task_by_transformers_rule():
    from variant.manifest import Manifest

    old = {"name": "x", "base_model": "y", "task": "text-classification", "max_length": 8, "method": "none",
           "parameters": 1, "parameters_original": 1, "onnx_bytes": 1}
    assert Manifest.model_validate({**old, "labels": ["a", "b"]}).task == "single_label"
    assert Manifest.model_validate({**old, "labels": ["score"]}).task == "regression"


def test_compare_defaults_to_the_variants_with_the_references_head(heads_client):
    body = heads_client.post("/v1/compare", json={"inputs": PASSAGES, "reference": "tags"}).json()
    assert sorted(r["model"] for r in body["results"]) == ["tags", "tags-other"]


def test_compare_refuses_variants_with_other_heads(heads_client):
    response = heads_client.post("/v1/compare", json={"inputs": ["ok"], "models": ["tags"], "reference": "three"})
    assert response.status_code == 422 and "cannot be compared" in response.json()["error"]
    same = heads_client.post("/v1/compare", json={"inputs": PASSAGES, "models": ["similarity"],
                                                  "reference": "similarity"}).json()
    assert same["results"][0]["agreement"] == pytest.approx(1.0) and same["results"][0]["mae"] == 0.0


def test_shadow_counts_per_label_agreement_for_multi_label(make_client, head_models, tmp_path):
    import re
    import shutil

    for name in ("tags", "tags-other", "similarity"):
        shutil.copytree(head_models[0] / name, tmp_path / name)
    client = make_client(tmp_path, shadow_rate=1.0, reference="tags")
    client.post("/v1/models/tags-other/classify", json={"inputs": PASSAGES})
    client.post("/v1/models/similarity/classify", json={"inputs": PASSAGES})  # another head: not mirrored
    client.wait(client.app.state.shadow.drain())
    metrics = client.get("/metrics").text
    on = {n: torch_logits(head_models[1][n], PASSAGES) >= 0 for n in ("tags", "tags-other")}
    expected = float((on["tags"] == on["tags-other"]).mean(axis=1).sum())
    assert expected not in (0.0, float(len(PASSAGES)))  # a fraction of the labels: the test can tell
    agreed = re.search(r'slimserve_shadow_agreements_total\{model="tags-other"\} (\S+)', metrics)
    assert float(agreed.group(1)) == pytest.approx(expected)
    assert f'slimserve_shadow_inputs_total{{model="tags-other"}} {float(len(PASSAGES))}' in metrics
    assert f'slimserve_shadow_dropped_total{{model="similarity"}} {float(len(PASSAGES))}' in metrics


def test_cascades_need_single_label_variants(make_client, head_models):
    from variant.cascade import CascadeSpec

    client = make_client(head_models[0], cascades={"c": CascadeSpec(fast="tags", reference="tags", threshold=0.9)})
    response = client.post("/v1/models/c/classify", json={"inputs": ["ok"]})
    assert response.status_code == 503 and "cascades need single_label variants" in response.json()["error"]


def test_a_bad_multi_label_cell_names_its_data_row(head_models, tmp_path):
    from compressor.evaluate import evaluate_all

    out, _ = head_models
    data = tmp_path / "tags.tsv"
    data.write_text("sentence\tlabel\n" + f"{PASSAGES[0]}\tplot\n{PASSAGES[1]}\tplot,nope\n")
    with pytest.raises(InputError, match="data row 2: label 'nope'"):
        evaluate_all([out / "tags"], data, None, threads=1)
