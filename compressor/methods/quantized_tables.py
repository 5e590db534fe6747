"""Embedding tables stored as 8-, 4- or 2-bit rows, looked up by ONNX Runtime's GatherBlockQuantized.

Every Gather that reads rows of a float table (word, position and token-type embeddings,
embed-ae's latents) becomes a GatherBlockQuantized (com.microsoft domain) over a uint8
table: one byte per weight at 8 bits, two per byte at 4, four at 2 (low bits first). Each
row has one float scale and one zero point (the op's block spans the row): 5 bytes a row.
The zero point matters at 4 bits: symmetric rows, which waste a level and the unused side
of a skewed row, cost the SST-2 teacher 0.6 points where asymmetric ones cost none.

Hot rows: given the tokens a calibration text uses most, the tables looked up by the token
ids keep those rows at 8 bits and store the others at the chosen width. A uint16 map from
token id to slot (the hot rows first) picks the row from one of two lookups. Tables looked
up by anything else (positions, token types) have a few hundred rows at most and are
stored at 4 bits when the chosen width is 2.

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
HOT_BITS = 8
SMALL_TABLE_BITS = 4  # the least a position or token-type table is stored in
TOKEN_IDS = "input_ids"


def row_block(width: int) -> int:
    """The smallest block the op accepts that spans a whole row: one scale per row."""
    return max(MIN_BLOCK, 1 << (width - 1).bit_length())


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """[rows, n·(8/bits)] values below 2**bits → [rows, n] bytes, the first value in the lowest bits."""
    per = 8 // bits
    packed = np.zeros((values.shape[0], values.shape[1] // per), np.uint8)
    for i in range(per):
        packed |= (values[:, i::per].astype(np.uint8) << (bits * i)).astype(np.uint8)
    return packed


def quantize_rows(table: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored table, scales [rows, 1], zero points [rows, 1]) in the op's layout. Below 8
    bits the width must fill whole bytes; the one zero point per row sits in the lowest
    bits of its byte."""
    top = 2 ** bits - 1
    # The range always holds 0, so that zero weights come back exactly.
    low, high = np.minimum(table.min(1, keepdims=True), 0), np.maximum(table.max(1, keepdims=True), 0)
    scale = (high - low) / top
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    zero = np.clip(np.round(-low / scale), 0, top)
    stored = np.clip(np.round(table / scale) + zero, 0, top).astype(np.uint8)
    return pack(stored, bits), scale, zero.astype(np.uint8)


def token_counts(feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """How often each token id occurs at the real (unpadded) positions of calibration batches."""
    return np.bincount(np.concatenate([feed[TOKEN_IDS][feed["attention_mask"].astype(bool)] for feed in feeds]))


def hot_tokens(counts: np.ndarray, most: int) -> np.ndarray:
    """The ids of up to `most` tokens that occur, the most frequent first (ties by id)."""
    order = np.argsort(-counts, kind="stable")
    return order[:min(most, int((counts > 0).sum()))]


def table_recipe(bits: int, hot_rows: int) -> str:
    """How the tables are stored, in a variant's recipe line."""
    if bits == 32:
        return "fp32"
    hot = f", the calibration text's {hot_rows} most frequent tokens' rows in int8" if hot_rows else ""
    return f"int{bits} rows, one scale and zero point per row{hot}"


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


def store_rows(graph: onnx.GraphProto, values: np.ndarray, bits: int, stem: str) -> list[str]:
    """Add `values` in `bits`-bit rows; returns the lookup's inputs, indices left blank."""
    stored, scale, zero = quantize_rows(values, bits)
    graph.initializer.extend([numpy_helper.from_array(stored, stem), numpy_helper.from_array(scale, f"{stem}/scale"),
                              numpy_helper.from_array(zero, f"{stem}/zero_point")])
    return [stem, "", f"{stem}/scale", f"{stem}/zero_point"]


def gather_node(inputs: list[str], indices: str, out: str, bits: int, stored_width: int) -> onnx.NodeProto:
    return helper.make_node("GatherBlockQuantized", [inputs[0], indices, *inputs[2:]], [out], name=out,
                            domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=row_block(stored_width),
                            bits=bits)


def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value))


def slice_width(source: str, out: str, width: int) -> list[onnx.NodeProto]:
    """A Slice that drops the zero columns filling the last byte."""
    bounds = [constant(f"{out}/{key}", np.array([value], np.int64))
              for key, value in (("start", 0), ("end", width), ("axis", -1))]
    return [*bounds, helper.make_node("Slice", [source, *(n.output[0] for n in bounds)], [out], name=f"{out}/Slice")]


def hot_split_nodes(stem: str, hot: list[str], cold: list[str], hot_count: int, bits: int, ids: str, out: str,
                    stored_width: int) -> list[onnx.NodeProto]:
    """Rows by slot: slots below `hot_count` from the hot table, the rest from the cold one."""
    slot, first_cold = f"{out}/slot", np.array(hot_count, np.int64)
    return [
        helper.make_node("Gather", [f"{stem}/slot", ids], [f"{slot}/stored"], name=f"{slot}/Gather"),
        helper.make_node("Cast", [f"{slot}/stored"], [slot], name=f"{slot}/Cast", to=onnx.TensorProto.INT64),
        constant(f"{out}/first_cold", first_cold),
        constant(f"{out}/last_hot", first_cold - 1),
        constant(f"{out}/zero", np.array(0, np.int64)),
        constant(f"{out}/last_axis", np.array([-1], np.int64)),
        helper.make_node("Min", [slot, f"{out}/last_hot"], [f"{out}/hot_index"], name=f"{out}/Min"),
        helper.make_node("Sub", [slot, f"{out}/first_cold"], [f"{out}/cold_offset"], name=f"{out}/Sub"),
        helper.make_node("Max", [f"{out}/cold_offset", f"{out}/zero"], [f"{out}/cold_index"], name=f"{out}/Max"),
        helper.make_node("Less", [slot, f"{out}/first_cold"], [f"{out}/is_hot"], name=f"{out}/Less"),
        helper.make_node("Unsqueeze", [f"{out}/is_hot", f"{out}/last_axis"], [f"{out}/is_hot_row"],
                         name=f"{out}/Unsqueeze"),
        gather_node(hot, f"{out}/hot_index", f"{out}/hot_rows", HOT_BITS, stored_width),
        gather_node(cold, f"{out}/cold_index", f"{out}/cold_rows", bits, stored_width),
        helper.make_node("Where", [f"{out}/is_hot_row", f"{out}/hot_rows", f"{out}/cold_rows"], [out],
                         name=f"{out}/Where"),
    ]


def quantize_table(graph: onnx.GraphProto, table: onnx.TensorProto, gathers: list[onnx.NodeProto], bits: int,
                   hot: np.ndarray | None) -> dict[str, list[onnx.NodeProto]]:
    """Swap the float table for its quantized form; returns each Gather's replacement nodes.
    A width that does not fill whole bytes gets zero columns (a Slice drops them again)."""
    values = numpy_helper.to_array(table)
    width = values.shape[1]
    values = np.pad(values, ((0, 0), (0, -width % (8 // bits))))
    stored_width = values.shape[1]
    graph.initializer.remove(table)
    stem = f"{table.name}/int{bits}"
    if hot is None:
        inputs = store_rows(graph, values, bits, stem)
    else:
        is_hot = np.zeros(len(values), bool)
        is_hot[hot] = True
        order = np.concatenate([hot, np.flatnonzero(~is_hot)])
        slots = np.empty(len(values), np.int64)
        slots[order] = np.arange(len(values))
        graph.initializer.append(numpy_helper.from_array(
            slots.astype(np.uint16 if len(values) <= 2 ** 16 else np.int32), f"{stem}/slot"))
        hot_inputs = store_rows(graph, values[hot], HOT_BITS, f"{stem}/hot")
        cold_inputs = store_rows(graph, values[~is_hot], bits, f"{stem}/cold")
    replaced = {}
    for gather in gathers:
        out = gather.output[0]
        rows = f"{out}/padded" if stored_width != width else out
        if hot is None:
            nodes = [gather_node(inputs, gather.input[1], rows, bits, stored_width)]
        else:
            nodes = hot_split_nodes(stem, hot_inputs, cold_inputs, len(hot), bits, gather.input[1], rows, stored_width)
        replaced[out] = nodes + (slice_width(rows, out, width) if rows != out else [])
    return replaced


def quantize_tables(model: onnx.ModelProto, bits: int, counts: np.ndarray | None = None, hot_rows: int = 0) -> int:
    """Rewrite every embedding lookup in place; returns how many tables were quantized.
    With token `counts` and `hot_rows`, the tables looked up by the token ids keep the
    `hot_rows` most frequent tokens' rows at 8 bits."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    lookups = table_lookups(graph)
    for name, gathers in lookups.items():
        by_ids = all(g.input[1] == TOKEN_IDS for g in gathers)
        hot = hot_tokens(counts, hot_rows) if by_ids and counts is not None and hot_rows else None
        replaced.update(quantize_table(graph, initializers[name], gathers,
                                       bits if by_ids else max(bits, SMALL_TABLE_BITS), hot))
    if not replaced:
        return 0
    nodes = [new for node in graph.node for new in replaced.get(node.output[0], [node])]
    graph.ClearField("node")
    graph.node.extend(nodes)
    # ONNX's type inference does not know the op: name the rows' type for the tools that
    # read the graph after this (the static quantizer skips a tensor of unknown type).
    known = {v.name for v in graph.value_info}
    graph.value_info.extend(helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None)
                            for n in nodes if n.op_type == "GatherBlockQuantized" and n.output[0] not in known)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(lookups)
