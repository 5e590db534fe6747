"""Heads by task through the whole pipeline: multi-label, regression and pair checkpoints
exported, the manifest recording the task, the graph's answers served as PyTorch computes
them (sigmoids, the score itself, pairs with their token types), and `compressor
evaluate` scoring each task by its own metric. The service's reading of each task on
fake variants: tests/service/test_tasks.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="building checkpoints needs torch (the [compress] extra)")

from conftest import TINY, wordpiece_tokenizer

from compressor.errors import InputError
from compressor.evaluate import evaluate_all
from variant.manifest import read_manifest

QUERY = "is the film charming"
PASSAGES = ["it's a charming and often affecting journey.", "stocks rallied after the central bank held rates steady",
            "the plot is thin and the acting is wooden", "a quietly devastating film that lingers"]
TAGS = {0: "plot", 1: "acting", 2: "music"}


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
    from compressor.pipeline import Recipe, compress

    root = tmp_path_factory.mktemp("heads")
    checkpoints = {
        "tags": save_head(root / "tags", "multi_label_classification", TAGS),
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
    pairs = isinstance(inputs[0], tuple)
    first, second = ([x[0] for x in inputs], [x[1] for x in inputs]) if pairs else (inputs, None)
    with torch.no_grad():
        return model(**tokenizer(first, second, padding=True, return_tensors="pt")).logits.numpy()


@pytest.fixture
def heads_client(make_client, head_models):
    return make_client(head_models[0])


def test_the_manifest_records_the_task(head_models):
    out, _ = head_models
    assert {n: read_manifest(out / n).task for n in ("tags", "similarity", "pairs", "three")} == {
        "tags": "multi_label", "similarity": "regression", "pairs": "single_label", "three": "single_label"}


def test_multi_label_is_served_with_a_sigmoid_per_label(heads_client, head_models):
    expected = 1 / (1 + np.exp(-torch_logits(head_models[1]["tags"], PASSAGES)))
    body = heads_client.post("/v1/models/tags/classify", json={"inputs": PASSAGES}).json()
    for row, p in zip(expected, body["predictions"]):
        assert [p["scores"][TAGS[i]] for i in range(3)] == pytest.approx(row, abs=1e-5)
        assert p["labels"] == [TAGS[i] for i in np.argsort(-row) if row[i] >= 0.5]
    assert any(0 < len(p["labels"]) < 3 for p in body["predictions"])  # the threshold decided something


def test_regression_is_served_as_the_score_itself(heads_client, head_models):
    expected = torch_logits(head_models[1]["similarity"], PASSAGES)[:, 0]
    body = heads_client.post("/v1/models/similarity/classify", json={"inputs": PASSAGES}).json()
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected, abs=1e-5)


def test_rerank_scores_pairs_as_the_cross_encoder_does(heads_client, head_models):
    # Pairs carry token types: the exported graph must read them as PyTorch does.
    pairs = [(QUERY, p) for p in PASSAGES]
    expected = torch_logits(head_models[1]["similarity"], pairs)[:, 0]
    ranked = heads_client.post("/v1/rerank", json={"model": "similarity", "query": QUERY, "texts": PASSAGES,
                                                   "raw_scores": True}).json()
    assert [r["index"] for r in ranked] == list(np.argsort(-expected))
    assert [r["score"] for r in ranked] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
    positive = np.exp(torch_logits(head_models[1]["pairs"], pairs))
    positive = positive[:, 1] / positive.sum(axis=1)
    two_class = heads_client.post("/v1/rerank", json={"model": "pairs", "query": QUERY, "texts": PASSAGES}).json()
    assert [r["score"] for r in two_class] == pytest.approx(sorted(positive, reverse=True), abs=1e-5)


def test_evaluate_scores_regression_by_correlation(head_models, tmp_path):
    out, checkpoints = head_models
    values = torch_logits(checkpoints["similarity"], PASSAGES)[:, 0] * 3 + 1  # a perfect linear fit
    data = tmp_path / "sts.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{v:.6f}\n" for t, v in zip(PASSAGES, values)))
    [result] = evaluate_all([out / "similarity"], data, out / "similarity", threads=1)
    assert result["task"] == "regression"
    assert result["pearson"] == pytest.approx(1.0, abs=1e-4) and "accuracy" not in result
    assert result["agreement"] == pytest.approx(1.0) and result["mae"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_scores_multi_label_decisions(head_models, tmp_path):
    out, checkpoints = head_models
    on = 1 / (1 + np.exp(-torch_logits(checkpoints["tags"], PASSAGES))) >= 0.5
    cells = [",".join(TAGS[i] for i in np.flatnonzero(row)) for row in on]
    cells[0] = ",".join(TAGS[i] for i in range(3) if not on[0, i])  # every decision of row 0 wrong
    data = tmp_path / "tags.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{c}\n" for t, c in zip(PASSAGES, cells)))
    [result] = evaluate_all([out / "tags"], data, None, threads=1)
    assert result["accuracy"] == pytest.approx(1 - 3 / (3 * len(PASSAGES)), abs=1e-4)


def test_evaluate_refuses_a_reference_with_another_head(head_models, tmp_path):
    out, _ = head_models
    data = tmp_path / "d.tsv"
    data.write_text("sentence\n" + "".join(f"{t}\n" for t in PASSAGES))
    with pytest.raises(InputError, match="'tags' \\(multi_label, 3 labels\\) cannot be compared"):
        evaluate_all([out / "tags"], data, out / "similarity", threads=1)


def test_a_bad_multi_label_cell_names_its_data_row(head_models, tmp_path):
    out, _ = head_models
    data = tmp_path / "tags.tsv"
    data.write_text("sentence\tlabel\n" + f"{PASSAGES[0]}\tplot\n{PASSAGES[1]}\tplot,nope\n")
    with pytest.raises(InputError, match="data row 2: label 'nope'"):
        evaluate_all([out / "tags"], data, None, threads=1)
