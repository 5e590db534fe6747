"""`--quantize int4`: weight-only 4-bit MatMuls through ONNX Runtime's MatMulNBits, and
embedding tables stored in 8 or 4 bits.

Every MatMul with a constant weight (the encoder's Linears, factorized or not, and
embed-ae's decoder) becomes a MatMulNBits: the weight in 4-bit blocks of `block_size`
along its input dimension, each block with a float scale and, unless symmetric, a 4-bit
zero point. Activations stay float; `accuracy_level` sets what the kernel computes in:
4 quantizes each block of activations to int8 on the fly and uses the CPU's int8 dot
products (VNNI, AMX), 1 keeps fp32. Gemms with a weight (BERT's pooler, the
pre-classifier of RoBERTa and DistilBERT) are rewritten as MatMuls first so that they are
4-bit too (the pooler is half a megabyte of fp32 in MiniLM); the Gemm that yields the
logits stays fp32: a few thousand weights, whose error would reach the logits undamped.

4-bit MatMuls alone leave the token embeddings in fp32, about half of a MiniLM file, so by
default the embedding tables are stored as int8 rows too (quantized_tables); `emb4` halves
them again, `emb2` halves the token table once more, and `emb32` keeps them fp32. `hotN`
keeps the rows of the calibration text's N most frequent tokens at 8 bits. Weights generated in the graph are treated as
under int8: their generators stay fp32 for ONNX Runtime to fold at load, and their factors
are stored as int8 rows.

`gptq` rounds the MatMul weights against the activations the calibration text gives them
(compressor.methods.gptq) into the same blocks, so it costs no bytes more than min-max.

The options follow `int4`, joined by '-', in any order: `int4-b64-sym-acc1-emb4`.
Serving needs onnxruntime >= 1.23 (GatherBlockQuantized's `bits`), `emb2` a build that takes
2-bit rows (1.32 was checked); `emb32` runs on 1.20.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import onnx
from onnx import helper, numpy_helper

from compressor.methods.gptq import quantize_matmuls
from compressor.methods.quantize import Feeds, keep_generators_fp32, store_factors_int8
from compressor.methods.quantized_tables import (
    quantize_tables,
    table_recipe,
    token_counts,
)
from compressor.recipe import INT4, Int4Options, parse_int4


def recipe(options: Int4Options) -> str:
    zero = "symmetric" if options.symmetric else "asymmetric, HQQ-fitted" if options.hqq else "asymmetric"
    if options.gptq:
        zero += ", rounded by GPTQ on the calibration activations"
    return (f"weight-only 4-bit MatMulNBits, blocks of {options.block_size}, {zero}, "
            f"accuracy level {options.accuracy_level}; embedding tables "
            f"{table_recipe(options.embedding_bits, options.hot_rows)}")


def nbits_quantizer() -> ModuleType:
    """ONNX Runtime's MatMulNBits quantizer module. On import it configures the root logger
    at INFO, which would print every library's INFO records for the rest of the process:
    the root logger is put back as it was, and the quantizer's one line per node silenced."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization import matmul_nbits_quantizer

    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)
    return matmul_nbits_quantizer


def quantize_int4(source: Path, target: Path, spec: str, feeds: Feeds | None = None) -> dict:
    """`--quantize int4[-OPTION...]`: weight-only; calibration batches only with `gptq`."""
    options = parse_int4(spec)
    generators = keep_generators_fp32(source)  # rewrites the file: load it after
    model = onnx.load(str(source))
    hidden_gemms_as_matmuls(model.graph, set(generators))
    assert feeds or not (options.gptq or options.hot_rows), \
        "int4-gptq and int4-hotN need calibration batches: their row says so (Quantizer.calibrated)"
    if options.gptq:
        quantize_matmuls(model, feeds, options.block_size, options.symmetric, options.accuracy_level, set(generators))
    else:
        model = round_to_nearest(model, options, generators)
    tables = 0
    if options.embedding_bits < 32:
        counts = token_counts(feeds) if options.hot_rows else None
        tables = quantize_tables(model, options.embedding_bits, counts, options.hot_rows)
    onnx.save(model, str(target))
    matmuls = sum(n.op_type == "MatMulNBits" for n in model.graph.node)
    return {"quantize": spec, "quantize_recipe": recipe(options),
            INT4: {**asdict(options), "matmuls": matmuls, "embedding_tables": tables}, **store_factors_int8(target)}


def round_to_nearest(model: onnx.ModelProto, options: Int4Options, generators: list[str]) -> onnx.ModelProto:
    """ONNX Runtime's quantizer: each block's min and max, or HQQ's fitted scale and zero point."""
    nbits = nbits_quantizer()
    if options.hqq:
        config = nbits.HQQWeightOnlyQuantConfig(block_size=options.block_size, bits=4, op_types_to_quantize=("MatMul",))
    else:
        config = nbits.DefaultWeightOnlyQuantConfig(block_size=options.block_size, is_symmetric=options.symmetric,
                                                   accuracy_level=options.accuracy_level,
                                                   op_types_to_quantize=("MatMul",), bits=4)
    quantizer = nbits.MatMulNBitsQuantizer(model, nodes_to_exclude=generators, algo_config=config)
    with warnings.catch_warnings():  # HQQ hands torch read-only arrays it only reads
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        quantizer.process()
    model = quantizer.model.model
    if options.hqq:  # its quantizer leaves the compute type to the kernel's default (fp32)
        for node in model.graph.node:
            if node.op_type == "MatMulNBits":
                kept = [a for a in node.attribute if a.name != "accuracy_level"]
                node.ClearField("attribute")
                node.attribute.extend([*kept, helper.make_attribute("accuracy_level", options.accuracy_level)])
    return model


def hidden_gemms_as_matmuls(graph: onnx.GraphProto, keep: set[str]) -> None:
    """MatMulNBits replaces MatMuls only: each Gemm with a weight of its own (BERT's pooler,
    RoBERTa's and DistilBERT's pre-classifier) becomes MatMul + Add, its weight stored
    [in, out]. Gemms in `keep` and the one yielding a graph output stay."""
    weights = {i.name: i for i in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    outputs = {o.name for o in graph.output}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = weights.get(node.input[1]) if node.op_type == "Gemm" else None
        if weight is None or len(weight.dims) != 2 or uses[weight.name] > 1 or node.name in keep or \
                node.output[0] in outputs or attrs.get("transA") or attrs.get("alpha", 1.0) != 1.0 or \
                attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        if attrs.get("transB"):
            weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight).T.copy(), weight.name))
        product = f"{node.name}/product" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight.name], [product], name=f"{node.name}/MatMul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}/Add"))
    graph.ClearField("node")
    graph.node.extend(nodes)
