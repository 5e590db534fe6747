import json

import pytest

pytest.importorskip("torch", reason="exporting needs torch and onnx (the [compress] extra)")
pytest.importorskip("onnx", reason="exporting needs torch and onnx (the [compress] extra)")

import numpy as np
import onnx
import torch

from compressor import export
from compressor.checkpoint import load_classifier
from compressor.errors import InputError, ParityError
from compressor.pipeline import Recipe, build, compress
from variant.backends.ort import OrtBackend
from variant.manifest import files_digest, read_manifest
from variant.tokenization import encode, load_tokenizer

MANIFEST_KEYS = {"name", "base_model", "task", "labels", "max_length", "method", "settings", "parameters",
                 "parameters_original", "onnx_bytes", "created", "parity"}


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_plain_export_matches_pytorch(checkpoints, tmp_path, arch):
    manifest = compress(str(checkpoints[arch]), Recipe("plain"), tmp_path)
    folder = tmp_path / "plain"
    assert {"model.onnx", "tokenizer.json", "variant.json"} <= {p.name for p in folder.iterdir()}
    assert manifest.parity < 1e-4
    assert manifest.parameters == manifest.parameters_original
    assert manifest.onnx_bytes == (folder / "model.onnx").stat().st_size
    assert MANIFEST_KEYS <= set(json.loads((folder / "variant.json").read_text()))
    assert read_manifest(folder).labels == ["negative", "positive"]
    graph_inputs = [i.name for i in onnx.load(folder / "model.onnx").graph.input]
    expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if arch == "bert" else [])
    assert graph_inputs == expected


def test_pairs_and_padding_match_pytorch(checkpoints, tmp_path):
    """The served path (tokenizer.json + ORT) agrees with PyTorch on text pairs of mixed length."""
    classifier = load_classifier(str(checkpoints["bert"]))
    compress(str(checkpoints["bert"]), Recipe("pairs"), tmp_path)
    pairs = [("the plot is thin", "the acting is wooden and the film drags on"), ("ok", "fine")]
    batch = encode(load_tokenizer(tmp_path / "pairs" / "tokenizer.json", classifier.max_length), pairs)
    actual = OrtBackend(tmp_path / "pairs" / "model.onnx").run(batch.arrays)
    hf = classifier.tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    assert np.array_equal(batch.arrays["token_type_ids"], hf["token_type_ids"].numpy())
    with torch.no_grad():
        expected = classifier.model(**hf).logits.numpy()
    assert np.abs(actual - expected).max() < 1e-4


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_svd_export_matches_the_compressed_model(checkpoints, tmp_path, arch):
    manifest = compress(str(checkpoints[arch]), Recipe("svd", "svd", 0.5), tmp_path)
    assert manifest.parity < 1e-4  # ONNX vs the compressed PyTorch model, not vs the original
    assert manifest.parameters < manifest.parameters_original
    assert manifest.settings["svd"]["ratio"] == 0.5
    matmuls = sum(n.op_type == "MatMul" for n in onnx.load(tmp_path / "svd" / "model.onnx").graph.node)
    plain = compress(str(checkpoints[arch]), Recipe("plain"), tmp_path)
    assert plain.parameters == manifest.parameters_original
    assert matmuls > sum(n.op_type == "MatMul" for n in onnx.load(tmp_path / "plain" / "model.onnx").graph.node)


def test_variant_files_are_readable_by_other_users(checkpoints, tmp_path):
    compress(str(checkpoints["bert"]), Recipe("plain"), tmp_path)
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "plain" / "variant.json").stat().st_mode & 0o777 == 0o644


def test_a_killed_runs_leftovers_are_cleared_by_the_next_run(checkpoints, tmp_path):
    (tmp_path / ".plain.tmp-killed").mkdir()
    compress(str(checkpoints["bert"]), Recipe("plain"), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


def test_int8_is_smaller_and_close(checkpoints, tmp_path):
    plain = compress(str(checkpoints["bert"]), Recipe("plain"), tmp_path)
    int8 = compress(str(checkpoints["bert"]), Recipe("int8", quantize="int8"), tmp_path)
    assert int8.method == "int8" and plain.method == "none"
    both = compress(str(checkpoints["bert"]), Recipe("both", "svd", 0.5, "int8"), tmp_path)
    assert both.method == "svd+int8"
    assert int8.onnx_bytes < plain.onnx_bytes
    assert int8.settings["quantize"] == "int8"
    assert 0 < int8.parity < 0.05
    ops = {n.op_type for n in onnx.load(tmp_path / "int8" / "model.onnx").graph.node}
    # The summary line calls the quantized figure drift, not a failed parity check.
    assert export.parity_summary(plain.method, None, plain.parity) == (
        f"parity {plain.parity:.1e} (max logit difference, fp32 export vs PyTorch, limit 1e-04)")
    assert export.parity_summary(int8.method, "int8", int8.parity) == (
        f"logit drift {int8.parity:.1e} vs fp32 (int8 rounding, expected; "
        "accuracy is what `compressor evaluate` measures)")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops


def test_static_int8_quantizes_weight_matmuls_only(checkpoints, tmp_path):
    from conftest import CORPUS

    plain = compress(str(checkpoints["bert"]), Recipe("plain"), tmp_path)
    static = compress(str(checkpoints["bert"]), Recipe("static", quantize="int8-static"), tmp_path, CORPUS)
    assert static.method == "int8-static" and static.settings["quantize"] == "int8-static"
    assert static.onnx_bytes < plain.onnx_bytes and 0 < static.parity < 0.05
    graph = onnx.load(tmp_path / "static" / "model.onnx").graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "DynamicQuantizeLinear" not in ops
    weights = {i.name for i in graph.initializer}
    # Every MatMul left reads a dequantized weight or multiplies two activations; none reads an fp32 weight.
    assert not any(n.op_type == "MatMul" and n.input[1] in weights for n in graph.node)


def test_static_int8_with_packed_tables_quantizes_every_weight_matmul_and_looks_rows_up_packed(checkpoints, tmp_path,
                                                                                             caplog):
    from conftest import CORPUS

    int8 = compress(str(checkpoints["bert"]), Recipe("static", quantize="int8-static"), tmp_path, CORPUS)
    packed = compress(str(checkpoints["bert"]), Recipe("packed", quantize="int8-static-emb4-hot256"), tmp_path, CORPUS)
    assert packed.settings["embedding_bits"] == 4 and packed.settings["hot_rows"] == 256
    assert "int4 rows" in packed.settings["quantize_recipe"] and packed.batch_invariant
    assert packed.onnx_bytes < int8.onnx_bytes
    graph = onnx.load(tmp_path / "packed" / "model.onnx").graph
    assert sum(n.op_type == "GatherBlockQuantized" for n in graph.node) == 4  # hot and cold words, positions, types
    feeds = encode(load_tokenizer(tmp_path / "packed" / "tokenizer.json", packed.max_length), CORPUS[:4]).arrays
    assert np.isfinite(OrtBackend(tmp_path / "packed" / "model.onnx").run(feeds)).all()
    # embed-ae's decoder reads the packed rows; the quantizer knows their type, so it warns of nothing.
    compress(str(checkpoints["bert"]), Recipe("latents", "embed-ae", 0.5, "int8-static-emb4"), tmp_path, CORPUS)
    graph = onnx.load(tmp_path / "latents" / "model.onnx").graph
    weights = {i.name for i in graph.initializer}
    assert not any(n.op_type == "MatMul" and n.input[1] in weights for n in graph.node)
    assert not [r for r in caplog.records if "failed to infer the type" in r.getMessage()]


def test_static_int8_needs_calibration(checkpoints, tmp_path):
    with pytest.raises(InputError, match="--quantize int8-static needs --calibration"):
        compress(str(checkpoints["bert"]), Recipe("static", quantize="int8-static"), tmp_path)


def test_failed_parity_leaves_nothing_behind(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "measure_parity", lambda *a: 1.0)
    with pytest.raises(ParityError, match="limit"):
        compress(str(checkpoints["bert"]), Recipe("broken"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("recipe", [Recipe("pruned", "prune", 0.5), Recipe("factorized", "svd", 0.5)])
def test_a_compressed_fp32_export_off_parity_fails_and_leaves_nothing(checkpoints, tmp_path, monkeypatch, recipe):
    """Held to the same limit as a plain export, against the compressed model."""
    from conftest import CORPUS

    real = export.export_onnx

    def then_drift(classifier, path, sentences):
        real(classifier, path, sentences)
        with torch.no_grad():  # the graph was written; the compressed model it is checked against moves on
            classifier.model.classifier.bias += 1e-2

    monkeypatch.setattr(export, "export_onnx", then_drift)
    with pytest.raises(ParityError, match=r"differs from the compressed PyTorch model by 1\.0\de-02 \(limit 1e-04\)"):
        compress(str(checkpoints["bert"]), recipe, tmp_path, CORPUS)
    assert list(tmp_path.iterdir()) == []


def test_the_digest_is_of_the_model_and_tokenizer_files(checkpoints, tmp_path):
    manifest = compress(str(checkpoints["bert"]), Recipe("v"), tmp_path)
    assert manifest.digest == read_manifest(tmp_path / "v").digest == files_digest(tmp_path / "v")
    assert manifest.digest.startswith("sha256:") and len(manifest.digest) == len("sha256:") + 64
    other = compress(str(checkpoints["bert"]), Recipe("w", "svd", 0.5), tmp_path)
    assert other.digest != manifest.digest


def test_interrupted_export_keeps_the_previous_variant(checkpoints, tmp_path, monkeypatch):
    first = compress(str(checkpoints["bert"]), Recipe("v"), tmp_path)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compress(str(checkpoints["bert"]), Recipe("v", "svd", 0.5), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert read_manifest(tmp_path / "v").created == first.created and read_manifest(tmp_path / "v").method == "none"


def test_ctrl_c_in_the_cli_is_one_line_and_leaves_no_variant(checkpoints, tmp_path, monkeypatch, capsys):
    from compressor.cli import main
    from compressor.methods import svd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(svd, "compress", interrupted)  # the pipeline looks a method up when it runs
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(checkpoints["bert"]), "--method", "svd", "--name", "v", "--out", str(tmp_path)])
    assert exit_info.value.code == 130 and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err.strip() == "compressor: interrupted; what was being written was discarded, what was finished stays"


def test_rebuilding_replaces_the_variant(checkpoints, tmp_path):
    compress(str(checkpoints["bert"]), Recipe("v"), tmp_path)
    compress(str(checkpoints["bert"]), Recipe("v", "svd", 0.5), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert read_manifest(tmp_path / "v").method == "svd"


def test_build_does_not_touch_the_loaded_model(checkpoints, tmp_path):
    classifier = load_classifier(str(checkpoints["bert"]))
    before = {k: v.clone() for k, v in classifier.model.state_dict().items()}
    build(classifier, Recipe("svd", "svd", 0.3), tmp_path)
    after = classifier.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not classifier.model.training


@pytest.mark.parametrize("recipe, message", [
    (Recipe("x", "magic"), "unknown method 'magic'"),
    (Recipe("x", "svd", 0.0), "--ratio must be in"),
    (Recipe("x", "svd", 1.5), "--ratio must be in"),
    (Recipe("x", quantize="int3"), "unknown --quantize"),
    (Recipe("../escape"), "variant name"),
    (Recipe("x", "svd+prune"), "prune must come before svd"),
    (Recipe("x", "svd+asvd"), "use one method that replaces the encoder Linears"),
])
def test_bad_recipes_are_refused(checkpoints, tmp_path, recipe, message):
    with pytest.raises(InputError, match=message):
        compress(str(checkpoints["bert"]), recipe, tmp_path)
    assert list(tmp_path.iterdir()) == []
