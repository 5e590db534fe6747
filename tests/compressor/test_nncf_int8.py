"""`--quantize int8-nncf`: NNCF's static int8 on a tiny model, run on both runtimes."""

import pytest

pytest.importorskip("onnx", reason="quantizing needs onnx and nncf (the [compress] extra)")

import numpy as np
import onnx
from conftest import CORPUS

from compressor.cli import main
from compressor.pipeline import Recipe, compress
from variant.backends import open_backend
from variant.manifest import Runtime
from variant.tokenization import encode, load_tokenizer


@pytest.fixture(scope="module")
def variants(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("nncf-models")
    plain = compress(str(checkpoints["bert"]), Recipe("plain"), out)
    nncf = compress(str(checkpoints["bert"]), Recipe("nncf", quantize="int8-nncf"), out, CORPUS)
    return out, plain, nncf


def test_only_the_matmuls_with_a_stored_weight_are_quantized(variants):
    out, plain, manifest = variants
    graph = onnx.load(str(out / "nncf" / "model.onnx")).graph
    stored = {i.name for i in graph.initializer}
    produced_by = {o: n for n in graph.node for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    dequantized = [n for n in matmuls if n.input[1] not in stored and produced_by[n.input[1]].op_type == "DequantizeLinear"]
    weight_dequantizers = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in stored]
    assert dequantized and weight_dequantizers  # weights are stored as int8 and dequantized in the graph
    quantized_weights = {next(i for i in graph.initializer if i.name == n.input[0]).data_type for n in weight_dequantizers}
    assert quantized_weights == {onnx.TensorProto.INT8}
    # Attention scores (Q·Kᵀ, softmax·V) multiply two activations, neither fed by a quantizer.
    scores = [n for n in matmuls if all(produced_by.get(i) is not None and produced_by[i].op_type != "DequantizeLinear"
                                        for i in n.input)]
    assert scores
    assert manifest.settings["quantize"] == "int8-nncf" and "SmoothQuant" in manifest.settings["quantize_recipe"]
    assert manifest.onnx_bytes < plain.onnx_bytes


@pytest.mark.parametrize("runtime", [Runtime(), Runtime(backend="openvino")])
def test_it_answers_like_the_fp32_export_on_both_runtimes(variants, runtime):
    out, plain, _ = variants
    tokenizer = load_tokenizer(out / "plain" / "tokenizer.json", plain.max_length)
    batch = encode(tokenizer, CORPUS[:8]).arrays
    expected = open_backend(out / "plain" / "model.onnx", Runtime()).run(batch)
    logits = open_backend(out / "nncf" / "model.onnx", runtime).run(batch)
    assert logits.shape == expected.shape and np.isfinite(logits).all()
    assert np.abs(logits - expected).max() < 0.1  # int8 rounding, not a different model


def test_without_calibration_it_exits_2(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(checkpoints["bert"]), "--method", "none", "--quantize", "int8-nncf",
              "--name", "x", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "int8-nncf" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
