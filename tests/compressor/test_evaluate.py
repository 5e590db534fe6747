import json
import shutil

import pytest
from conftest import metric_value

from compressor.cli import main
from compressor.errors import InputError
from compressor.evaluate import dataset_key, evaluate_all
from variant.manifest import MANIFEST_FILE, Evaluation, files_digest, read_manifest

ROWS = [("a charming and often affecting journey", "1"), ("the plot is thin", "negative"),
        ("wooden acting and a dull script", "0"), ("funny and tender", "positive")] * 3


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t} \t{l}\n" for t, l in ROWS))
    return path


def test_evaluate_reports_every_figure(models_copy, data, tmp_path, capsys):
    out = tmp_path / "results.json"
    main(["evaluate", str(models_copy / "tiny-bert-svd"), str(models_copy / "tiny-bert"), "--data", str(data),
          "--reference", str(models_copy / "tiny-bert"), "--json", str(out), "--threads", "1"])
    head, *rows, summary = capsys.readouterr().out.strip().splitlines()
    results = {r["variant"]: r for r in json.loads(out.read_text())}
    assert head.split()[:4] == ["variant", "method", "runtime", "accuracy"]
    printed = {cells[0]: float(cells[3]) for cells in map(str.split, rows)}
    assert all(r["runtime"] == "onnxruntime/f32" for r in results.values())
    assert printed == {name: r["accuracy"] for name, r in results.items()}  # one row a variant, as saved
    best = max(r["accuracy"] for r in results.values())
    assert summary.startswith(f"evaluated 2 variant(s); best accuracy {best:.4f} (")
    assert results["tiny-bert"]["agreement"] == 1.0  # the reference agrees with itself
    for r in results.values():
        assert 0 <= r["accuracy"] <= 1 and r["examples"] == len(ROWS)
        assert r["parameters"] > 0 and r["onnx_bytes"] > 0
        for batch in ("batch_1", "batch_32"):
            assert 0 < r["latency_ms"][batch]["p50"] <= r["latency_ms"][batch]["p95"]
    assert results["tiny-bert-svd"]["parameters"] < results["tiny-bert"]["parameters"]
    saved = read_manifest(models_copy / "tiny-bert-svd").evaluations[dataset_key(data)]
    assert saved.dataset == "dev.tsv" and saved.rows == len(ROWS) and saved.labelled
    assert saved.accuracy == results["tiny-bert-svd"]["accuracy"] and saved.reference == "tiny-bert"


def served_digest(client_for, folder) -> str:
    response = client_for(folder).post("/v1/models/tiny-bert/classify", json={"inputs": ["fine"]})
    assert response.status_code == 200, response.text
    return response.headers["x-model-digest"]


def test_evaluating_a_variant_keeps_its_digest(models_dir, data, tmp_path, client_for):
    """`compressor evaluate` rewrites variant.json; the variant's identity is its model and
    tokenizer files, so neither the recorded digest nor the one the service sends moves."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert", folder / "tiny-bert")
    before = served_digest(client_for, folder)
    manifest_bytes = (folder / "tiny-bert" / MANIFEST_FILE).read_bytes()
    main(["evaluate", str(folder / "tiny-bert"), "--data", str(data), "--threads", "1"])
    assert (folder / "tiny-bert" / MANIFEST_FILE).read_bytes() != manifest_bytes  # the evaluation was recorded
    assert served_digest(client_for, folder) == before == read_manifest(folder / "tiny-bert").digest
    assert before == files_digest(folder / "tiny-bert")


def test_a_manifest_without_a_digest_is_served_with_one_from_its_files(models_dir, tmp_path, client_for):
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert", folder / "tiny-bert")
    recorded = read_manifest(folder / "tiny-bert").digest
    manifest = json.loads((folder / "tiny-bert" / MANIFEST_FILE).read_text())
    del manifest["digest"]  # as written before the digest was recorded
    (folder / "tiny-bert" / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert served_digest(client_for, folder) == recorded


def test_each_dataset_keeps_its_own_evaluation_and_only_labelled_ones_reach_the_gauge(
        models_dir, data, tmp_path, client_for):
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-bert", folder / "tiny-bert")
    made_up = tmp_path / "made-up.tsv"
    made_up.write_text("sentence\n" + "".join(f"{t}\n" for t, _ in ROWS[:5]))
    evaluate_all([folder / "tiny-bert"], data, None, 1)
    first = read_manifest(folder / "tiny-bert").evaluations[dataset_key(data)]
    evaluate_all([folder / "tiny-bert"], made_up, None, 1)
    evaluate_all([folder / "tiny-bert"], data, None, 1)  # the same file again: replaces its own entry only
    evaluations = read_manifest(folder / "tiny-bert").evaluations
    assert set(evaluations) == {dataset_key(data), dataset_key(made_up)}
    labelled, unlabelled = evaluations[dataset_key(data)], evaluations[dataset_key(made_up)]
    assert labelled.rows == len(ROWS) and labelled.accuracy == first.accuracy and labelled.date >= first.date
    assert unlabelled.rows == 5 and not unlabelled.labelled and unlabelled.accuracy is None

    metrics = client_for(folder).get("/metrics").text
    assert metric_value(metrics, "slimserve_model_accuracy", model="tiny-bert",
                        dataset=dataset_key(data)) == labelled.accuracy
    assert "made-up.tsv" not in metrics


def test_a_manifest_with_the_old_single_evaluation_loads(models_dir, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(models_dir / "tiny-bert", folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest.pop("evaluations", None)
    manifest["evaluation"] = {"dataset": "dev.tsv", "examples": 872, "accuracy": 0.9128, "agreement": 0.97,
                              "reference": "original", "latency_ms": {"batch_1": {"p50": 1.2, "p95": 1.5}}}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    evaluations = read_manifest(folder).evaluations
    assert evaluations == {"dev.tsv": Evaluation(
        dataset="dev.tsv", rows=872, labelled=True, accuracy=0.9128, agreement=0.97, reference="original",
        latency_ms={"batch_1": {"p50": 1.2, "p95": 1.5}})}
    manifest["evaluation"] = {"dataset": "made-up.tsv", "examples": 200}  # unlabelled: no accuracy was recorded
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not read_manifest(folder).evaluations["made-up.tsv"].labelled


def test_accuracy_counts_label_names_and_ids(models_copy, tmp_path):
    """Accuracy against labels that are the variant's own predictions must be 1.0."""
    from compressor.evaluate import open_variant
    from variant.measure import answers

    texts = [t for t, _ in ROWS]
    predicted = answers(open_variant(models_copy / "tiny-bert", 1), texts).argmax(-1)
    names = ["negative", "positive"]
    path = tmp_path / "own.tsv"
    path.write_text("sentence\tlabel\n" + "".join(
        f"{t}\t{names[p] if i % 2 else p}\n" for i, (t, p) in enumerate(zip(texts, predicted))))
    [result] = evaluate_all([models_copy / "tiny-bert"], path, None, threads=1)
    assert result["accuracy"] == 1.0


def test_unknown_labels_and_missing_columns_are_input_errors(models_dir, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nsome text\tmaybe\n")
    with pytest.raises(InputError, match="'maybe'"):
        evaluate_all([models_dir / "tiny-bert"], bad, None, threads=1)
    with pytest.raises(InputError, match="no column 'review'"):
        evaluate_all([models_dir / "tiny-bert"], bad, None, threads=1, text_col="review")


@pytest.mark.parametrize("threshold, fallback", [(0.0, 0.0), (1.0, 1.0)])
def test_a_cascade_beside_its_variants_is_scored_as_the_service_runs_it(models_dir, data, tmp_path, capsys,
                                                                         threshold, fallback):
    folder = tmp_path / "models"
    for name in ("tiny-bert", "tiny-bert-svd"):
        shutil.copytree(models_dir / name, folder / name)
    (folder / "cascades.json").write_text(json.dumps(
        {"svd-first": {"fast": "tiny-bert-svd", "reference": "tiny-bert", "threshold": threshold},
         "elsewhere": {"fast": "tiny-bert-svd", "reference": "not-evaluated", "threshold": 0.5}}))
    results = {r["variant"]: r for r in evaluate_all(
        [folder / "tiny-bert-svd", folder / "tiny-bert"], data, folder / "tiny-bert", 1)}
    assert set(results) == {"tiny-bert", "tiny-bert-svd", "svd-first"}  # a cascade needs both ends evaluated
    cascade = results["svd-first"]
    assert cascade["fallback"] == fallback
    # Under 0 nothing falls back (the fast variant's answers); under 1 everything does.
    answered_by = results["tiny-bert"] if fallback else results["tiny-bert-svd"]
    assert cascade["accuracy"] == answered_by["accuracy"] and cascade["agreement"] == answered_by["agreement"]
    assert cascade["onnx_bytes"] == results["tiny-bert"]["onnx_bytes"] + results["tiny-bert-svd"]["onnx_bytes"]
    assert 0 < cascade["latency_ms"]["batch_1"]["p50"]


def test_the_table_compares_every_row_with_the_reference(models_copy, data, capsys):
    main(["evaluate", str(models_copy / "tiny-bert"), str(models_copy / "tiny-bert-svd"), "--data", str(data),
          "--reference", str(models_copy / "tiny-bert"), "--threads", "1"])
    head, base, svd = capsys.readouterr().out.splitlines()[:3]
    assert "Δ points" in head and head.endswith("faster b32")
    assert base.split()[-4:] == ["+0.00", "1.00x", "1.00x", "1.00x"]
    assert float(svd.split()[-3].rstrip("x")) > 1  # the SVD variant's file is smaller


@pytest.mark.parametrize("broken", ["missing", "no-manifest"])
def test_a_folder_that_is_no_variant_beside_a_reference_is_one_line(models_copy, data, tmp_path, broken):
    folder = tmp_path / broken
    if broken == "no-manifest":
        folder.mkdir()
    with pytest.raises(InputError, match="does not exist" if broken == "missing" else "cannot load variant"):
        evaluate_all([models_copy / "tiny-bert", folder], data, models_copy / "tiny-bert", 1)
