import json

import pytest

from compressor.cli import main
from compressor.errors import InputError
from compressor.evaluate import evaluate_all
from service.manifest import read_manifest

ROWS = [("a charming and often affecting journey", "1"), ("the plot is thin", "negative"),
        ("wooden acting and a dull script", "0"), ("funny and tender", "positive")] * 3


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t} \t{l}\n" for t, l in ROWS))
    return path


def test_evaluate_reports_every_figure(models_dir, data, tmp_path, capsys):
    out = tmp_path / "results.json"
    main(["evaluate", str(models_dir / "tiny-bert-svd"), str(models_dir / "tiny-bert"), "--data", str(data),
          "--reference", str(models_dir / "tiny-bert"), "--json", str(out), "--threads", "1"])
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "tiny-bert-svd" in printed and printed.strip().splitlines()[-1].startswith("evaluated 2")
    results = {r["variant"]: r for r in json.loads(out.read_text())}
    assert results["tiny-bert"]["agreement"] == 1.0  # the reference agrees with itself
    for r in results.values():
        assert 0 <= r["accuracy"] <= 1 and r["examples"] == len(ROWS)
        assert r["parameters"] > 0 and r["onnx_bytes"] > 0
        for batch in ("batch_1", "batch_32"):
            assert 0 < r["latency_ms"][batch]["p50"] <= r["latency_ms"][batch]["p95"]
    assert results["tiny-bert-svd"]["parameters"] < results["tiny-bert"]["parameters"]
    saved = read_manifest(models_dir / "tiny-bert-svd").evaluation
    assert saved.dataset == "dev.tsv" and saved.accuracy == results["tiny-bert-svd"]["accuracy"]


def test_accuracy_counts_label_names_and_ids(models_dir, tmp_path):
    """Accuracy against labels that are the variant's own predictions must be 1.0."""
    from compressor.evaluate import open_variant, predict

    texts = [t for t, _ in ROWS]
    predicted = predict(open_variant(models_dir / "tiny-bert", 1), texts)
    names = ["negative", "positive"]
    path = tmp_path / "own.tsv"
    path.write_text("sentence\tlabel\n" + "".join(
        f"{t}\t{names[p] if i % 2 else p}\n" for i, (t, p) in enumerate(zip(texts, predicted))))
    [result] = evaluate_all([models_dir / "tiny-bert"], path, None, threads=1)
    assert result["accuracy"] == 1.0


def test_unknown_labels_and_missing_columns_are_input_errors(models_dir, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nsome text\tmaybe\n")
    with pytest.raises(InputError, match="'maybe'"):
        evaluate_all([models_dir / "tiny-bert"], bad, None, threads=1)
    with pytest.raises(InputError, match="no column 'review'"):
        evaluate_all([models_dir / "tiny-bert"], bad, None, threads=1, text_col="review")
