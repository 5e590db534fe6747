"""Embedding tables stored as 8- or 4-bit rows, looked up by ONNX Runtime's GatherBlockQuantized.

Every Gather that reads rows of a float table (word, position and token-type embeddings,
embed-ae's latents) becomes a GatherBlockQuantized (com.microsoft domain) over a uint8
table: one byte per weight at 8 bits, two per byte at 4 (low nibble first). Each row has
one float scale and one zero point (the op's block spans the row): 5 bytes a row. The
zero point matters at 4 bits: symmetric rows, which waste a level and the unused side of a
skewed row, cost the SST-2 teacher 0.6 points where asymmetric ones cost none.

The op dequantizes only the rows it gathers. A DequantizeLinear in front of a plain Gather
would be folded back into an fp32 table when ONNX Runtime loads the graph: smaller on disk,
but not in memory.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
MIN_BLOCK = 16  # the op wants a power of two, at least 16


def row_block(width: int) -> int:
    """The smallest block the op accepts that spans a whole row: one scale per row."""
    return max(MIN_BLOCK, 1 << (width - 1).bit_length())


def pack_nibbles(values: np.ndarray) -> np.ndarray:
    """[rows, 2n] values below 16 → [rows, n] bytes, the even column in the low nibble."""
    return (values[:, 0::2] | (values[:, 1::2] << 4)).astype(np.uint8)


def quantize_rows(table: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored table, scales [rows, 1], zero points [rows, 1]) in the op's layout. At 4 bits
    the width must be even (two values per byte); the one zero point per row is the low
    nibble of its byte."""
    top = 2 ** bits - 1
    # The range always holds 0, so that zero weights come back exactly.
    low, high = np.minimum(table.min(1, keepdims=True), 0), np.maximum(table.max(1, keepdims=True), 0)
    scale = (high - low) / top
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    zero = np.clip(np.round(-low / scale), 0, top)
    stored = np.clip(np.round(table / scale) + zero, 0, top).astype(np.uint8)
    return (pack_nibbles(stored) if bits == 4 else stored), scale, zero.astype(np.uint8)


def is_row_lookup(node: onnx.NodeProto, position: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.op_type == "Gather" and position == 0 and axis == 0


def table_lookups(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Float 2-D initializers read only as the rows of Gathers, with those Gathers."""
    tables = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in tables:
                users.setdefault(name, []).append((node, position))
    outputs = {o.name for o in graph.output}
    return {name: [node for node, _ in found] for name, found in users.items()
            if name not in outputs and all(is_row_lookup(node, position) for node, position in found)}


def store_table(graph: onnx.GraphProto, table: onnx.TensorProto, bits: int) -> list[str]:
    """Swap the float table for its quantized form; returns the lookup's inputs, indices left blank.
    An odd width at 4 bits gets a zero column to fill the last byte (a Slice drops it again)."""
    values = numpy_helper.to_array(table)
    if bits == 4 and values.shape[1] % 2:
        values = np.pad(values, ((0, 0), (0, 1)))
    stored, scale, zero = quantize_rows(values, bits)
    stem = f"{table.name}/int{bits}"
    graph.initializer.remove(table)
    graph.initializer.extend([numpy_helper.from_array(stored, stem), numpy_helper.from_array(scale, f"{stem}/scale"),
                              numpy_helper.from_array(zero, f"{stem}/zero_point")])
    return [stem, "", f"{stem}/scale", f"{stem}/zero_point"]


def lookup_nodes(gather: onnx.NodeProto, inputs: list[str], bits: int, width: int, stored_width: int
                 ) -> list[onnx.NodeProto]:
    name, out = f"{gather.name}/int{bits}", gather.output[0]
    padded = stored_width != width
    nodes = [helper.make_node("GatherBlockQuantized", [inputs[0], gather.input[1], *inputs[2:]],
                              [f"{out}/padded" if padded else out], name=name, domain=MS_DOMAIN,
                              gather_axis=0, quantize_axis=1, block_size=row_block(stored_width), bits=bits)]
    if padded:
        bounds = [helper.make_node("Constant", [], [f"{name}/{key}"], name=f"{name}/{key}",
                                   value=numpy_helper.from_array(np.array([value], np.int64)))
                  for key, value in (("start", 0), ("end", width), ("axis", -1))]
        nodes += bounds + [helper.make_node("Slice", [f"{out}/padded", *(n.output[0] for n in bounds)], [out],
                                            name=f"{name}/Slice")]
    return nodes


def quantize_tables(model: onnx.ModelProto, bits: int) -> int:
    """Rewrite every embedding lookup in place; returns how many tables were quantized."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    lookups = table_lookups(graph)
    for name, gathers in lookups.items():
        width = initializers[name].dims[1]
        inputs = store_table(graph, initializers[name], bits)
        stored_width = width + width % 2 if bits == 4 else width
        for gather in gathers:
            replaced[gather.output[0]] = lookup_nodes(gather, inputs, bits, width, stored_width)
    if not replaced:
        return 0
    nodes = [new for node in graph.node for new in replaced.get(node.output[0], [node])]
    graph.ClearField("node")
    graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(lookups)
