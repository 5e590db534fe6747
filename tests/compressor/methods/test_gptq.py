"""`int4-gptq`: GPTQ rounding against calibration activations, written as MatMulNBits blocks."""

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import numpy as np
import onnx
import onnxruntime as ort
import torch
from conftest import CORPUS
from onnx import helper, numpy_helper

from compressor.methods import gptq
from compressor.pipeline import Recipe, compress

K, N, BLOCK = 80, 24, 16  # K is not a multiple of 32: the 32-row blocks pad it


def toy_inputs(rows: int, seed: int) -> np.ndarray:
    """Correlated inputs with a few loud channels, as a transformer's are; one distribution, `seed` the draw."""
    mixing = np.eye(K) + 0.4 * np.random.default_rng(0).standard_normal((K, K))
    loud = 1 + 6 * (np.arange(K) % 13 == 0)
    return (np.random.default_rng(seed).standard_normal((rows, K)) @ mixing * loud).astype(np.float32)


def toy_model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="layer")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, None, K]),
         helper.make_tensor_value_info("attention_mask", onnx.TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def min_max(weight: np.ndarray, block: int) -> np.ndarray:
    """Round-to-nearest with each block's min and max, the way `int4` rounds: dequantized."""
    rows = []
    for start in range(0, weight.shape[0], block):
        w = torch.tensor(weight[start:start + block], dtype=torch.float64)
        low, high = torch.clamp(w.amin(0), max=0), torch.clamp(w.amax(0), min=0)
        scale = (high - low) / 15
        rows.append(gptq.dequantize(w, scale, torch.round(-low / scale)))
    return torch.cat(rows).numpy()


def unpack(model: onnx.ModelProto) -> np.ndarray:
    """The dequantized [K, N] weight of the graph's one MatMulNBits, read from its blocks."""
    (node,) = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    tensors = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    packed, scales, zeros = (tensors[name] for name in node.input[1:4])
    levels = np.stack([packed & 15, packed >> 4], -1).reshape(N, scales.shape[1], -1).astype(np.float32)
    zero = np.stack([zeros & 15, zeros >> 4], -1).reshape(N, -1)[:, :scales.shape[1]]
    weight = (levels - zero[:, :, None]) * scales[:, :, None]
    return weight.reshape(N, -1).T[:K]


def test_gptq_lowers_the_output_error_on_the_calibration_data_against_min_max():
    weight = np.random.default_rng(1).standard_normal((K, N)).astype(np.float32)
    x = toy_inputs(2000, seed=2)
    q, scales, zeros = gptq.gptq(weight, x.astype(np.float64).T @ x, BLOCK)
    rounded = ((q.astype(np.float64) - np.repeat(zeros, BLOCK, 0)) * np.repeat(scales, BLOCK, 0))
    held_out = toy_inputs(2000, seed=3)  # and on inputs it did not see, drawn from the same distribution
    for inputs in (x, held_out):
        exact = inputs @ weight
        ours = np.mean((inputs @ rounded - exact) ** 2)
        nearest = np.mean((inputs @ min_max(weight, BLOCK) - exact) ** 2)
        assert ours < 0.7 * nearest
    assert q.max() <= 15 and zeros.max() <= 15 and scales.shape == zeros.shape == (K // BLOCK, N)


@pytest.mark.parametrize("symmetric", [False, True])
def test_the_matmulnbits_graph_computes_with_the_dequantized_weights(symmetric):
    weight = np.random.default_rng(4).standard_normal((K, N)).astype(np.float32)
    x = toy_inputs(3 * 7, seed=5).reshape(3, 7, K)
    mask = np.ones((3, 7), np.int64)
    mask[1, 4:] = 0  # padded positions: left out of the Hessian
    model = toy_model(weight)
    assert gptq.quantize_matmuls(model, [{"x": x, "attention_mask": mask}], 32, symmetric, 1, set()) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits"]
    assert not any(i.name == "w" for i in model.graph.initializer)
    (node,) = model.graph.node
    assert (len(node.input) == 3) == symmetric  # symmetric blocks store no zero points (8 is the default)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x, "attention_mask": mask})[0]
    if symmetric:
        tensors = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        eights = np.full((N, (tensors[node.input[2]].shape[1] + 1) // 2), 0x88, np.uint8)
        model.graph.initializer.append(numpy_helper.from_array(eights, "eights"))
        node.input.append("eights")
    assert np.allclose(y, x @ unpack(model), atol=1e-4)
    real = mask.astype(bool)  # what it was fitted on: closer than min-max there
    assert np.mean((y - x @ weight)[real] ** 2) < np.mean((x @ min_max(weight, 32) - x @ weight)[real] ** 2)


def test_int4_gptq_builds_from_calibration_text_at_the_bytes_of_min_max(checkpoints, tmp_path):
    bert = str(checkpoints["bert"])
    calibrated = compress(bert, Recipe("gptq", quantize="int4-emb4-gptq"), tmp_path, CORPUS)
    nearest = compress(bert, Recipe("rtn", quantize="int4-emb4"), tmp_path, CORPUS)
    assert calibrated.settings["int4"]["gptq"] is True and "GPTQ" in calibrated.settings["quantize_recipe"]
    assert calibrated.settings["int4"]["matmuls"] == nearest.settings["int4"]["matmuls"]
    assert calibrated.onnx_bytes == nearest.onnx_bytes
    assert 0 < calibrated.parity < 0.05
