"""GPTQ rounding of MatMul weights into ONNX Runtime's MatMulNBits blocks (`int4-gptq`).

Min-max rounding takes each weight to its nearest 4-bit level on its own. GPTQ (Frantar et
al., 2022) rounds a weight [K, N] one input row at a time and moves each row's rounding
error onto the rows not yet rounded, weighted by how the layer's inputs co-vary on the
calibration text (H = Σ x xᵀ over real tokens, damped): what it keeps small is the error of
the layer's outputs on that data, ||X W - X Q||², not that of each weight. With
H⁻¹ = Uᵀ U (U upper triangular), rounding row k costs e = (w_k - q_k) / U_kk and updates
w_j -= U_kj e for every later row j.

Each block of `block_size` input rows holds, per output column, one float scale and one
4-bit zero point (none when symmetric: 8), fitted when rounding reaches the block, on
its weights as the earlier rows' errors have moved them: the range is min-max shrunk by
the factor among `CLIPS` that gives the block the least error weighted by H's diagonal.
The blocks are written in MatMulNBits' own layout, so a calibrated block costs exactly
the bytes of a min-max one.

The Hessians come from the fp32 graph itself: every weight MatMul's input is made a graph
output and the calibration batches are run through ONNX Runtime, tokenized as the service
will (pairs as pairs); padded positions are left out.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from compressor.methods.quantize import Feeds
from compressor.methods.quantized_tables import MS_DOMAIN, pack

DAMPING = 0.01  # of H's mean diagonal, added to its diagonal: keeps H invertible
CLIPS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)  # shrink factors of a block's range, tried per column
LEVELS = 16
LAZY_ROWS = 128  # rows rounded before the rows after them are updated at once (the same result, faster)


def weight_matmuls(graph: onnx.GraphProto, skip: set[str]) -> list[onnx.NodeProto]:
    """MatMuls whose second input is a stored 2-D float weight (not in `skip`)."""
    weights = {i.name: i for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and n.name not in skip and n.input[1] in weights
            and len(weights[n.input[1]].dims) == 2 and weights[n.input[1]].data_type == onnx.TensorProto.FLOAT]


def hessians(model: onnx.ModelProto, inputs: set[str], feeds: Feeds) -> dict[str, np.ndarray]:
    """Σ x xᵀ [K, K] of each tensor in `inputs` over the real tokens of `feeds`, in float64."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in sorted(inputs - present))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = sorted(inputs)
    sums: dict[str, np.ndarray] = {}
    for feed in feeds:
        mask = feed["attention_mask"].astype(bool)
        for name, x in zip(names, session.run(names, feed), strict=True):
            rows = x[mask] if x.ndim == 3 and x.shape[:2] == mask.shape else x.reshape(-1, x.shape[-1])
            rows = rows.astype(np.float64)
            sums[name] = sums.get(name, 0) + rows.T @ rows
    return sums


def block_ranges(rows: torch.Tensor, importance: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale [N], zero [N]) of one block of rows [B, N]: min-max shrunk by the clip in CLIPS
    with the least Σ importance·(w - dequantized)² per column."""
    best_scale = best_zero = best_error = None
    for clip in CLIPS:
        if symmetric:
            scale = rows.abs().amax(0) * clip / (LEVELS // 2 - 1)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero = torch.full_like(scale, LEVELS // 2)
        else:
            low = torch.clamp(rows.amin(0), max=0) * clip
            high = torch.clamp(rows.amax(0), min=0) * clip
            scale = (high - low) / (LEVELS - 1)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero = torch.clamp(torch.round(-low / scale), 0, LEVELS - 1)
        error = (importance[:, None] * (rows - dequantize(rows, scale, zero)) ** 2).sum(0)
        if best_error is None:
            best_scale, best_zero, best_error = scale, zero, error
        else:
            better = error < best_error
            best_scale = torch.where(better, scale, best_scale)
            best_zero = torch.where(better, zero, best_zero)
            best_error = torch.minimum(error, best_error)
    return best_scale, best_zero


def levels(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, LEVELS - 1)


def dequantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (levels(w, scale, zero) - zero) * scale


def gptq(weight: np.ndarray, hessian: np.ndarray, block_size: int, symmetric: bool = False
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round `weight` [K, N] (K a multiple of block_size) against `hessian` [K, K]:
    (levels [K, N] uint8, scales [K / block_size, N] float32, zero points [K / block_size, N] uint8)."""
    k, n = weight.shape
    assert k % block_size == 0 and hessian.shape == (k, k), (weight.shape, hessian.shape, block_size)
    w = torch.tensor(weight, dtype=torch.float64)
    h = torch.tensor(hessian, dtype=torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += torch.eye(k, dtype=torch.float64) * DAMPING * torch.diag(h).mean()
    importance = torch.diag(h)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    scales = torch.zeros(k // block_size, n, dtype=torch.float64)
    zeros = torch.zeros_like(scales)
    lazy = max(block_size, LAZY_ROWS // block_size * block_size)  # whole blocks: a block's range sees its updates
    for start in range(0, k, lazy):
        end = min(start + lazy, k)
        chunk, errors = w[start:end].clone(), torch.zeros(end - start, n, dtype=torch.float64)
        for i in range(end - start):
            row = start + i
            if row % block_size == 0:
                b = row // block_size
                scales[b], zeros[b] = block_ranges(chunk[i:i + block_size], importance[row:row + block_size], symmetric)
            scale, zero = scales[row // block_size], zeros[row // block_size]
            q[row] = levels(chunk[i], scale, zero)
            error = (chunk[i] - (q[row] - zero) * scale) / u[row, row]
            chunk[i:] -= torch.outer(u[row, row:end], error)
            errors[i] = error
        w[end:] -= u[start:end, end:].T @ errors
    return q.numpy().astype(np.uint8), scales.numpy().astype(np.float32), zeros.numpy().astype(np.uint8)


def nbits_initializers(stem: str, q: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None
                       ) -> list[onnx.TensorProto]:
    """MatMulNBits' B [N, blocks, block/2] (two levels a byte, the even row low), scales
    [N, blocks] and packed zero points [N, ceil(blocks / 2)] from levels [K, N] and per-block
    scales and zero points [blocks, N]."""
    k, n = q.shape
    blocks = scales.shape[0]
    packed = pack(q.T.reshape(n * blocks, k // blocks), 4).reshape(n, blocks, -1)
    tensors = [numpy_helper.from_array(packed, f"{stem}_Q4"),
               numpy_helper.from_array(np.ascontiguousarray(scales.T), f"{stem}_scales")]
    if zeros is not None:
        padded = np.pad(zeros.T, ((0, 0), (0, blocks % 2)))
        tensors.append(numpy_helper.from_array(pack(padded, 4), f"{stem}_zero_points"))
    return tensors


def quantize_matmuls(model: onnx.ModelProto, feeds: Feeds, block_size: int, symmetric: bool, accuracy_level: int,
                     skip: set[str]) -> int:
    """Replace every weight MatMul (not in `skip`) by a GPTQ-rounded MatMulNBits, in place;
    returns how many."""
    graph = model.graph
    matmuls = weight_matmuls(graph, skip)
    sums = hessians(model, {n.input[0] for n in matmuls}, feeds)
    weights = {i.name: i for i in graph.initializer}
    replaced: dict[str, onnx.NodeProto] = {}
    for node in matmuls:
        weight = numpy_helper.to_array(weights[node.input[1]])
        k, n = weight.shape
        pad = -k % block_size  # MatMulNBits pads K to whole blocks; the padding rows see no input
        hessian = np.pad(sums[node.input[0]], ((0, pad), (0, pad)))
        q, scales, zeros = gptq(np.pad(weight, ((0, pad), (0, 0))), hessian, block_size, symmetric)
        stem = node.input[1]
        tensors = nbits_initializers(stem, q, scales, None if symmetric else zeros)
        graph.initializer.extend(tensors)
        replaced[node.name] = helper.make_node(
            "MatMulNBits", [node.input[0], *(t.name for t in tensors)], list(node.output), name=f"{node.name}_Q4",
            domain=MS_DOMAIN, K=k, N=n, bits=4, block_size=block_size, accuracy_level=accuracy_level)
    used = {node.input[1] for node in matmuls}
    others = [node for node in graph.node if node.name not in replaced]
    still = {name for node in others for name in node.input}
    for name in used - still:
        graph.initializer.remove(weights[name])
    nodes = [replaced.get(node.name, node) for node in graph.node]
    graph.ClearField("node")
    graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replaced)
