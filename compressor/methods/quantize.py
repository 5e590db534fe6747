"""Post-training int8 of an exported graph with ONNX Runtime's quantizer.

`int8` (dynamic): the recipe Optimum calls avx512_vnni with per_channel=True: int8 weights,
symmetric and per output channel; uint8 activations, asymmetric, quantized at run time;
full 8-bit range (no reduce_range: VNNI and AMX do not overflow). Per-channel weights are
what keeps accuracy here: per-tensor int8 loses about two points on the SST-2 teacher.
Gather is in the list, so the token-embedding table is stored as int8 too.

Weights generated in the graph (GeneratedLinear: autoencoder, Kronecker, Tucker) feed no
MatMul directly, so the quantizer leaves their factors alone. Both recipes then store
those factors as int8 with one scale per row, dequantized by a Cast and a Mul. The chain
still has only constant inputs, so ONNX Runtime folds it at load as before: the file
shrinks about 4× more, and those layers run as fp32 MatMuls.

`int8-static` (QDQ): activation ranges are fixed ahead of time from unlabeled calibration
text, so no range is computed per request. Only the MatMuls with a weight are quantized
(QuantizeLinear/DequantizeLinear pairs around them); the attention-score MatMuls between
two activations stay fp32, since their ranges swing most from input to input.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from compressor.methods.quantized_tables import (
    quantize_tables,
    table_recipe,
    token_counts,
)
from compressor.recipe import parse_static

OPERATORS = ["MatMul", "Attention", "Gather", "Transpose", "EmbedLayerNormalization"]
Feeds = list[dict[str, np.ndarray]]  # calibration batches, by graph input name


class _SkipPreprocessAdvice(logging.Filter):
    # The quantizer logs advice to run its static-quantization pre-processing on the root
    # logger at every call; it does not apply to dynamic quantization of a traced graph.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(source: Path, target: Path, spec: str, feeds: Feeds | None = None) -> dict:
    """`--quantize int8`; the arguments are every quantizer's (compressor.recipe.Quantizer):
    dynamic quantization takes no options and no calibration."""
    advice = _SkipPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            source, target,
            op_types_to_quantize=OPERATORS,
            nodes_to_exclude=keep_generators_fp32(source),
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    finally:
        logging.getLogger().removeFilter(advice)
    return {"quantize": spec, "quantize_recipe": "dynamic, per-channel s8 weights, u8 activations",
            **store_factors_int8(target)}


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: Feeds) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def weight_matmuls(path: Path) -> list[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    generators = set(generator_nodes(graph))
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights and n.name not in generators]


def generator_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes that compute a weight from stored factors, and those that use a weight so
    computed: all stay fp32, for ONNX Runtime to fold the first into the second at load."""
    stored = {i.name for i in graph.initializer}
    constant = set(stored)
    names = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if all(name in constant for name in inputs):
            constant.update(node.output)
            names.append(node.name)
        elif any(name in constant and name not in stored for name in inputs):
            names.append(node.name)
    return names


def quantize_static_int8(source: Path, target: Path, spec: str, feeds: Feeds | None = None) -> dict:
    """`--quantize int8-static`: activation ranges fixed on `feeds`, calibration batches."""
    assert feeds, "int8-static needs calibration batches: its row says needs_calibration"
    options = parse_static(spec)
    # The embedding tables are no MatMul weights: stored before calibration, so that the
    # activation ranges are those of the stored tables. As int8 rows, as dynamic int8
    # stores them, or packed in fewer bits and looked up by GatherBlockQuantized.
    if options.embedding_bits == 8:
        tables = store_factors_int8(source, tables=True)
    else:
        model = onnx.load(str(source))
        counts = token_counts(feeds) if options.hot_rows else None
        tables = {"embedding_tables": quantize_tables(model, options.embedding_bits, counts, options.hot_rows),
                  "embedding_bits": options.embedding_bits, "hot_rows": options.hot_rows}
        onnx.save(model, str(source))
    keep_generators_fp32(source)
    advice = _SkipPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(
            source, target, _Reader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=weight_matmuls(source),
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    finally:
        logging.getLogger().removeFilter(advice)
    return {"quantize": spec, "quantize_recipe": "static QDQ, per-channel s8 weights, u8 activations (min-max)" +
            ("" if options.embedding_bits == 8 else
             f"; embedding tables {table_recipe(options.embedding_bits, options.hot_rows)}"), **tables, **store_factors_int8(target)}


def generator_factors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Float matrices (and stacks of them) that only feed nodes computing constants."""
    constant = {i.name for i in graph.initializer}
    for node in graph.node:
        if all(name in constant for name in node.input if name):
            constant.update(node.output)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    return [
        init for init in graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2 and init.name not in outputs
        and consumers.get(init.name) and all(out in constant for n in consumers[init.name] for out in n.output)
    ]


def keep_generators_fp32(path: Path) -> list[str]:
    """Prepare a graph in place for the quantizer and name the generator nodes it must
    leave alone.
    - A weight shared by several layers reaches all but its first user through an
      Identity, which hides it from the quantizer: users get the weight itself.
    - The generators' Gemms become MatMul (+ Add): the dynamic quantizer's own rewrite
      transposes each weight in place once per use, which breaks a shared decoder."""
    model = onnx.load(str(path))
    graph = model.graph
    stored = {i.name for i in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in stored}
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = aliases.get(name, name)
    generators = set(generator_nodes(graph))
    nodes = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] in aliases:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.name not in generators or attrs.get("transA") or \
                attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB"):
            weight = f"{node.name}/weight_t"
            nodes.append(helper.make_node("Transpose", [node.input[1]], [weight], name=f"{node.name}/Transpose"))
        product = f"{node.name}/product" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}/MatMul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}/Add"))
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    return generator_nodes(graph)


def embedding_tables(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Float tables a Gather reads rows of (token, position and type embeddings)."""
    tables = {node.input[0] for node in graph.node if node.op_type == "Gather"}
    return [init for init in graph.initializer
            if init.name in tables and init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2]


STORED = "/stored_int8"  # the quantizer's own suffixes are _quantized, _scale, ...


def store_factors_int8(path: Path, tables: bool = False) -> dict:
    """Store the generator factors (or with `tables`, the embedding tables) as int8 with
    one scale per row, dequantized by a Cast and a Mul that ONNX Runtime folds at load."""
    model = onnx.load(str(path))
    graph = model.graph
    if tables:
        stored = embedding_tables(graph)
    else:  # a row scale stored before is a generator's input too, and stays float
        stored = [f for f in generator_factors(graph) if STORED not in f.name]
    if not stored:
        return {}
    nodes = []
    for init in stored:
        values = numpy_helper.to_array(init)
        scale = np.abs(values).reshape(len(values), -1).max(1) / 127
        scale = np.where(scale > 0, scale, 1).astype(np.float32).reshape((-1,) + (1,) * (values.ndim - 1))
        quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(init)
        stem = init.name + STORED
        graph.initializer.extend([numpy_helper.from_array(quantized, stem),
                                  numpy_helper.from_array(scale, f"{stem}/row_scale")])
        nodes += [helper.make_node("Cast", [stem], [f"{stem}/fp32"], to=onnx.TensorProto.FLOAT, name=f"{stem}/Cast"),
                  helper.make_node("Mul", [f"{stem}/fp32", f"{stem}/row_scale"], [init.name], name=f"{stem}/Mul")]
    for node in reversed(nodes):
        graph.node.insert(0, node)
    onnx.save(model, str(path))
    return {"tables_int8" if tables else "factors_int8": len(stored)}
