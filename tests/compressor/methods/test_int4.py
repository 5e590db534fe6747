"""`--quantize int4`: 4-bit MatMulNBits weights and 8- or 4-bit embedding tables, on tiny models."""

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import numpy as np
import onnx
import onnxruntime as ort
import torch
from conftest import CORPUS, TINY
from onnx import helper, numpy_helper

from compressor import recipe
from compressor.checkpoint import load_classifier
from compressor.cli import main
from compressor.methods.quantized_tables import quantize_tables, token_counts
from compressor.pipeline import Recipe, compress
from compressor.report import weight_flops_per_token

WORD_TABLE = "model.bert.embeddings.word_embeddings.weight"
ENCODER_MATMULS = TINY["num_hidden_layers"] * 6  # Q, K, V, attention output, FFN in and out
WEIGHT_MATMULS = ENCODER_MATMULS + 1  # and the pooler (a Gemm in the export)
TEXTS = ["it's a charming and often affecting journey.", "the plot is thin and the acting is wooden"]


@pytest.fixture(scope="module")
def variants(checkpoints, tmp_path_factory):
    """One tiny BERT exported plain, as int8, and as int4 with each embedding width."""
    out = tmp_path_factory.mktemp("int4-models")
    recipes = [Recipe("plain"), Recipe("int8", quantize="int8"), Recipe("int4", quantize="int4"),
               Recipe("int4-emb4", quantize="int4-emb4"), Recipe("int4-emb32", quantize="int4-emb32-b16-sym-acc1"),
               Recipe("ae-int4", "embed-ae", 0.5, "int4-emb4"), Recipe("int4-hqq", quantize="int4-hqq"),
               Recipe("int4-emb2-hot", quantize="int4-emb2-hot256")]
    manifests = {r.name: compress(str(checkpoints["bert"]), r, out, CORPUS) for r in recipes}
    return out, manifests


def graph_of(folder):
    return onnx.load(str(folder / "model.onnx")).graph


def initializer(graph, name):
    return next(i for i in graph.initializer if i.name == name)


def test_int4_turns_every_weight_matmul_into_matmulnbits(variants):
    out, manifests = variants
    graph = graph_of(out / "int4")
    weights = {i.name for i in graph.initializer}
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == WEIGHT_MATMULS
    assert {helper.get_attribute_value(a) for n in nbits for a in n.attribute if a.name == "bits"} == {4}
    assert not any(n.op_type == "MatMul" and n.input[1] in weights for n in graph.node)
    (head,) = [n for n in graph.node if n.op_type == "Gemm"]  # the logits' own layer stays fp32
    assert head.output[0] == "logits" and initializer(graph, head.input[1]).data_type == onnx.TensorProto.FLOAT
    settings = manifests["int4"].settings
    assert settings["quantize"] == "int4" and "MatMulNBits" in settings["quantize_recipe"]
    assert settings["int4"] == {"block_size": 32, "symmetric": False, "accuracy_level": 4, "embedding_bits": 8,
                                "hqq": False, "gptq": False, "hot_rows": 0, "matmuls": WEIGHT_MATMULS,
                                "embedding_tables": 3}


def test_int4_stores_the_embeddings_as_int8_rows_and_beats_int8_on_size(variants):
    out, manifests = variants
    graph = graph_of(out / "int4")
    vocab, hidden = numpy_helper.to_array(initializer(graph_of(out / "plain"), WORD_TABLE)).shape
    table = initializer(graph, f"{WORD_TABLE}/int8")
    assert table.data_type == onnx.TensorProto.UINT8 and list(table.dims) == [vocab, hidden]
    assert list(initializer(graph, f"{WORD_TABLE}/int8/scale").dims) == [vocab, 1]  # one scale per row
    assert not any(i.data_type == onnx.TensorProto.FLOAT and list(i.dims) == [vocab, hidden] for i in graph.initializer)
    assert sum(n.op_type == "GatherBlockQuantized" for n in graph.node) == 3  # word, position, token type
    assert manifests["int4"].onnx_bytes < manifests["int8"].onnx_bytes < manifests["plain"].onnx_bytes
    assert 0 < manifests["int4"].parity < 0.05


def test_emb4_packs_two_weights_per_byte_and_emb32_keeps_fp32_tables(variants):
    out, manifests = variants
    vocab, hidden = numpy_helper.to_array(initializer(graph_of(out / "plain"), WORD_TABLE)).shape
    packed = initializer(graph_of(out / "int4-emb4"), f"{WORD_TABLE}/int4")
    assert packed.data_type == onnx.TensorProto.UINT8 and list(packed.dims) == [vocab, hidden // 2]
    assert manifests["int4-emb4"].onnx_bytes < manifests["int4"].onnx_bytes
    assert 0 < manifests["int4-emb4"].parity < 0.05
    kept = graph_of(out / "int4-emb32")
    assert initializer(kept, WORD_TABLE).data_type == onnx.TensorProto.FLOAT
    assert not any(n.op_type == "GatherBlockQuantized" for n in kept.node)
    assert manifests["int4-emb32"].settings["int4"] == {
        "block_size": 16, "symmetric": True, "accuracy_level": 1, "embedding_bits": 32, "hqq": False, "gptq": False, "hot_rows": 0,
        "matmuls": WEIGHT_MATMULS, "embedding_tables": 0}
    assert manifests["int4-emb32"].onnx_bytes > manifests["int4"].onnx_bytes


def test_emb2_with_hot_rows_splits_the_token_table_only_and_answers_alone_as_in_a_batch(variants, client_for):
    out, manifests = variants
    graph = graph_of(out / "int4-emb2-hot")
    names = {i.name for i in graph.initializer}
    assert {f"{WORD_TABLE}/int2/hot", f"{WORD_TABLE}/int2/cold", f"{WORD_TABLE}/int2/slot"} <= names
    assert not any(name.endswith("/int2") or "position_embeddings.weight/int2" in name for name in names)
    hot = initializer(graph, f"{WORD_TABLE}/int2/hot").dims[0]
    assert 0 < hot <= 256  # no more rows than the calibration text has tokens
    manifest = manifests["int4-emb2-hot"]
    assert manifest.settings["int4"]["hot_rows"] == 256 and "most frequent" in manifest.settings["quantize_recipe"]
    assert manifest.batch_invariant
    assert manifest.onnx_bytes < manifests["int4"].onnx_bytes  # int8 tables
    response = client_for(out).post("/v1/models/int4-emb2-hot/classify", json={"inputs": TEXTS})
    assert response.status_code == 200, response.text


def test_embed_ae_latents_are_quantized_and_the_decoder_is_4_bit(variants):
    out, manifests = variants
    manifest = manifests["ae-int4"]
    assert manifest.method == "embed-ae+int4-emb4"
    latent = manifest.settings["embed-ae"]["latent"]
    assert latent % 2 == 1  # odd: the last byte holds one value, and a Slice trims the padding
    graph = graph_of(out / "ae-int4")
    latents = next(i for i in graph.initializer if i.name.endswith("/int4") and i.dims[0] > 100)
    assert latents.data_type == onnx.TensorProto.UINT8 and latents.dims[1] == (latent + 1) // 2
    assert manifest.settings["int4"]["matmuls"] == WEIGHT_MATMULS + 1  # and embed-ae's decoder
    assert 0 < manifest.parity < 0.05


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_architectures_export_with_int4(checkpoints, tmp_path, arch):
    manifest = compress(str(checkpoints[arch]), Recipe("q", quantize="int4-emb4"), tmp_path)
    graph = graph_of(tmp_path / "q")
    assert manifest.settings["int4"]["matmuls"] == WEIGHT_MATMULS
    assert sum(n.op_type == "GatherBlockQuantized" for n in graph.node) == manifest.settings["int4"]["embedding_tables"] >= 2
    assert 0 < manifest.parity < 0.05


def test_weights_shared_between_layers_are_quantized_once(checkpoints, tmp_path):
    manifest = compress(str(checkpoints["bert"]), Recipe("shared", "ae-linear-shared", 0.5, "int4"), tmp_path)
    graph = graph_of(tmp_path / "shared")
    names = [i.name for i in graph.initializer]
    assert len(names) == len(set(names))
    # Each encoder Linear is two MatMuls; the shared factor reaches its later users through
    # an Identity in the export, which must not hide it from the quantizer.
    assert manifest.settings["int4"]["matmuls"] == 2 * ENCODER_MATMULS + 1
    assert 0 < manifest.parity < 0.05


def test_flops_count_matmulnbits_like_the_fp32_matmuls(variants):
    out, _ = variants
    pooler = 2 * TINY["hidden_size"] ** 2  # a MatMul under int4, a Gemm (not counted) in fp32
    assert weight_flops_per_token(out / "int4" / "model.onnx") == \
        weight_flops_per_token(out / "plain" / "model.onnx") + pooler


def lookup_model(table: np.ndarray, ids: str = "input_ids") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", ids], ["rows"], name="lookup")], "g",
        [helper.make_tensor_value_info(ids, onnx.TensorProto.INT64, None)],
        [helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def look_up(model: onnx.ModelProto, ids: np.ndarray, name: str = "input_ids") -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {name: ids})[0]


def within_half_a_step(rows: np.ndarray, wanted: np.ndarray, bits: int) -> bool:
    step = (np.maximum(wanted.max(1), 0) - np.minimum(wanted.min(1), 0)) / (2 ** bits - 1)
    return bool(np.all(np.abs(rows - wanted) <= step[:, None] / 2 + 1e-6))


@pytest.mark.parametrize("bits, width", [(8, 40), (4, 40), (4, 33), (2, 40), (2, 35)])
def test_table_lookups_dequantize_within_half_a_step(bits, width):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, width)).astype(np.float32)
    table[7] = 0  # an all-zero row must not divide by zero
    table[9] = np.abs(table[9])  # a row of one sign still holds 0 in its range
    model = lookup_model(table)
    assert quantize_tables(model, bits) == 1
    ids = np.array([0, 7, 49, 9, 3, 3])
    rows = look_up(model, ids)
    assert rows.shape == (len(ids), width)
    assert within_half_a_step(rows, table[ids], bits)
    assert np.all(rows[1] == 0)


@pytest.mark.parametrize("width", [40, 35])
def test_hot_rows_come_back_at_8_bits_and_the_rest_at_the_chosen_width(width):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(300, width)).astype(np.float32)
    feeds = [{"input_ids": np.array([[5, 5, 5, 17, 0]]), "attention_mask": np.array([[1, 1, 1, 1, 0]])},
             {"input_ids": np.array([[17, 250, 0, 0, 0]]), "attention_mask": np.array([[1, 1, 0, 0, 0]])}]
    counts = token_counts(feeds)
    assert counts[5] == 3 and counts[17] == 2 and counts[0] == 0  # padding is not counted
    model = lookup_model(table)
    quantize_tables(model, 2, counts, hot_rows=2)
    ids = np.array([[17, 5, 250, 299], [0, 5, 17, 1]])
    rows = look_up(model, ids)
    assert rows.shape == (2, 4, width)
    hot, cold = np.isin(ids, [5, 17]), ~np.isin(ids, [5, 17])
    assert within_half_a_step(rows[hot], table[ids[hot]], 8)
    assert within_half_a_step(rows[cold], table[ids[cold]], 2)
    assert not within_half_a_step(rows[cold], table[ids[cold]], 8)  # 2 bits really are coarser
    sizes = {i.name: i for i in model.graph.initializer}
    assert numpy_helper.to_array(sizes["table/int2/hot"]).shape == (2, width + (-width % 4))
    assert numpy_helper.to_array(sizes["table/int2/cold"]).shape == (298, (width + (-width % 4)) // 4)


def test_tables_not_looked_up_by_token_ids_keep_4_bits_and_no_hot_rows():
    table = np.random.default_rng(2).normal(size=(64, 40)).astype(np.float32)
    model = lookup_model(table, ids="position_ids")
    quantize_tables(model, 2, np.arange(64), hot_rows=8)
    assert {i.name for i in model.graph.initializer} == {"table/int4", "table/int4/scale", "table/int4/zero_point"}
    ids = np.arange(64)
    assert within_half_a_step(look_up(model, ids, "position_ids"), table, 4)


def test_the_service_classifies_int4_variants_like_pytorch(variants, checkpoints, client_for):
    out, _ = variants
    classifier = load_classifier(str(checkpoints["bert"]))
    with torch.no_grad():
        logits = classifier.model(**classifier.tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    expected = torch.softmax(logits, -1).numpy()
    client = client_for(out)
    for name in ("int4", "int4-emb4", "int4-emb32"):
        response = client.post(f"/v1/models/{name}/classify", json={"inputs": TEXTS})
        assert response.status_code == 200, response.text
        scores = np.array([[p["scores"][label] for label in ("negative", "positive")]
                           for p in response.json()["predictions"]])
        assert np.abs(scores - expected).max() < 0.02


def test_hqq_fits_other_block_parameters_than_min_max_and_keeps_the_compute_type(variants):
    out, manifests = variants
    hqq, rtn = graph_of(out / "int4-hqq"), graph_of(out / "int4")
    nodes = [n for n in hqq.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == WEIGHT_MATMULS
    assert all(helper.get_attribute_value(a) == 4 for n in nodes for a in n.attribute if a.name == "accuracy_level")
    assert all(any(a.name == "accuracy_level" for a in n.attribute) for n in nodes)
    first = nodes[0].input[2]  # the scales of the first 4-bit MatMul
    assert not np.allclose(numpy_helper.to_array(initializer(hqq, first)),
                           numpy_helper.to_array(initializer(rtn, first)))
    assert manifests["int4-hqq"].settings["int4"]["hqq"] is True and "HQQ" in manifests["int4-hqq"].settings["quantize_recipe"]
    assert 0 < manifests["int4-hqq"].parity < 0.05


def test_options_parse_in_any_order():
    assert recipe.parse_int4("int4") == recipe.Int4Options()
    assert recipe.parse_int4("int4-emb4-sym-b64-acc1") == recipe.Int4Options(64, True, 1, 4)
    assert recipe.parse_int4("int4-hqq-b64") == recipe.Int4Options(64, hqq=True)


@pytest.mark.parametrize("spec, message", [
    ("int4-b24", "'b24' is out of range"),
    ("int4-b8", "'b8' is out of range"),
    ("int4-emb3", "'emb3' is out of range"),
    ("int4-emb4-hot300", "'hot300' is out of range"),
    ("int4-hot512", "need emb2 or emb4"),
    ("int4-emb2-hot512", "--quantize int4-emb2-hot512 needs --calibration"),
    ("int4-acc7", "'acc7' is out of range"),
    ("int4-fast", "unknown option 'fast'"),
    ("int4-b32-b64", "block size is given twice"),
    ("int4-sym-hqq", "does not combine with sym"),
    ("int4-hqq-gptq", "hqq and gptq are two ways"),
    ("int4-gptq", "--quantize int4-gptq needs --calibration"),
    ("int4-", "unknown option ''"),
    ("int3", "unknown --quantize 'int3'"),
])
def test_bad_int4_options_exit_2_with_one_line(checkpoints, tmp_path, capsys, spec, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(checkpoints["bert"]), "--method", "none", "--quantize", spec,
              "--name", "x", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
