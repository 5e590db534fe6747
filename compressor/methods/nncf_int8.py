"""`--quantize int8-nncf`: static int8 calibrated by NNCF, for OpenVINO.

NNCF's post-training quantization with its transformer preset: SmoothQuant first moves
each MatMul's activation outliers into its weights (per input channel, alpha 0.95), then
activation ranges are fixed on the calibration batches, weights get one int8 scale per
output channel, and a fast bias correction absorbs the mean shift rounding causes. Only
MatMuls with a stored weight are quantized; the attention-score MatMuls between two
activations stay float, as in `int8-static`.

Measured on the SST-2 teacher (docs/benchmarks.md), it keeps fp32 accuracy on OpenVINO,
where its QuantizeLinear/DequantizeLinear pairs become int8 kernels; ONNX Runtime runs
the same graph correctly but slowly (it does not fuse the SmoothQuant scales), which is
why `int8-static`, calibrated by ONNX Runtime's own quantizer, stays the int8 for ONNX
Runtime, and why `compressor search` tries each on each backend.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnx import helper

from compressor.methods.quantize import (
    Feeds,
    generator_nodes,
    keep_generators_fp32,
    store_factors_int8,
    weight_matmuls,
)

RECIPE = "static QDQ by NNCF: transformer preset, SmoothQuant, per-channel s8 weights, fast bias correction"


def quantize_nncf_int8(source: Path, target: Path, spec: str, feeds: Feeds | None = None) -> dict:
    assert feeds, "int8-nncf needs calibration batches: its row says needs_calibration"
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # one INFO line per node otherwise
    keep_generators_fp32(source)
    model = onnx.load(str(source))
    shield_branch_reads(model.graph)
    quantized = set(weight_matmuls(source))
    float_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in quantized]
    ignored = sorted(set(float_matmuls) | set(generator_nodes(model.graph)))
    result = nncf.quantize(
        model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
    )
    onnx.save(result, str(target))
    return {"quantize": spec, "quantize_recipe": RECIPE, **store_factors_int8(target)}


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    """The values a subgraph (an If's branch) reads from the scopes around it."""
    local = {v.name for v in [*graph.input, *graph.initializer]} | {o for n in graph.node for o in n.output}
    return {name for node in graph.node for name in reads(node)} - local


def reads(node: onnx.NodeProto) -> set[str]:
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        for graph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
            names |= outer_reads(graph)
    return names


def shield_branch_reads(graph: onnx.GraphProto) -> None:
    """NNCF removes every Cast that changes no type and rewires its readers to the Cast's
    input, but misses readers inside an If's branches (DeBERTa-v2's relative positions),
    which are left reading a value nothing computes. A Cast such a branch reads hands its
    value on through an Identity, which NNCF leaves alone."""
    branch_reads = {name for node in graph.node for name in reads(node) - set(node.input)}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "Cast" and node.output[0] in branch_reads:
            value = node.output[0]
            node.output[0] = f"{value}/before_branch"
            nodes.append(helper.make_node("Identity", [node.output[0]], [value], name=f"{node.name}/to_branch"))
    graph.ClearField("node")
    graph.node.extend(nodes)
