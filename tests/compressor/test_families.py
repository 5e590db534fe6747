"""ELECTRA, XLM-RoBERTa, DeBERTa-v2 and ModernBERT on tiny checkpoints (tests/families.py):
the plain export serves what PyTorch computes, int8 quantizes each, and every method
either writes a variant within parity or refuses in one line, as compressor.families says.
The fast set runs `none`, int8 and two methods per family; the rest of the matrix is slow."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the families are built with torch and transformers (the [compress] extra)")
pytest.importorskip("transformers", reason="the families are built with torch and transformers (the [compress] extra)")

import numpy as np
import onnx
import torch
from conftest import CORPUS
from families import TINY_FAMILIES, save_family_checkpoint, tiny_family_classifier
from transformers import AutoConfig

from compressor.calibration import batches
from compressor.checkpoint import Classifier, load_classifier
from compressor.cli import main
from compressor.data import PARITY_SENTENCES, parity_inputs
from compressor.errors import InputError
from compressor.export import PARITY_LIMIT
from compressor.families import FAMILIES, markdown_table, refusal_message
from compressor.methods import drop_layers, prune
from compressor.methods.layers import input_readers, layers_of
from compressor.pipeline import Recipe, compress
from compressor.recipe import METHODS, QUANTIZERS
from variant.backends.ort import OrtBackend
from variant.folder import open_on
from variant.manifest import Manifest, Runtime
from variant.tokenization import encode, load_tokenizer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "methods.md"
FAST_METHODS = ("svd-aware", "embed-ae")  # the encoder Linears, data-aware; the token embeddings
PAIRS = list(zip(PARITY_SENTENCES, PARITY_SENTENCES[1:] + PARITY_SENTENCES[:1]))
INT8_DRIFT = 0.15  # max |Δlogit| of dynamic int8 against fp32 on the parity sentences; the logits spread over ~1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: save_family_checkpoint(family, root / family) for family in TINY_FAMILIES}


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> Path:
    """Each family exported plain and with dynamic int8, as `FAMILY` and `FAMILY-int8`."""
    out = tmp_path_factory.mktemp("family-variants")
    for family, folder in tiny.items():
        compress(str(folder), Recipe(family), out)
        compress(str(folder), Recipe(f"{family}-int8", quantize="int8"), out)
    return out


def served(folder: Path, inputs: list, max_length: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits as the service computes them: tokenizer.json and the ONNX graph."""
    batch = encode(load_tokenizer(folder / "tokenizer.json", max_length), inputs)
    return OrtBackend(folder / "model.onnx").run(batch.arrays), batch.arrays


def weight_bytes(graph: onnx.GraphProto) -> int:
    return sum(len(i.raw_data) for i in graph.initializer)


@torch.no_grad()
def pytorch(classifier: Classifier, inputs: list) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    pairs = isinstance(inputs[0], tuple)
    encoded = classifier.tokenizer([x[0] for x in inputs] if pairs else inputs, [x[1] for x in inputs] if pairs else None,
                                   padding=True, truncation=True, max_length=classifier.max_length, return_tensors="pt")
    return classifier.model(**encoded).logits.numpy(), encoded


def outcome(folder: Path, model_type: str, method: str, out: Path, quantize: str | None = None) -> Manifest | None:
    """Run one (family, method) cell: the variant within parity (a method's; a quantizer's
    drift is its own test), or the table's refusal (None)."""
    refusal = refusal_message(model_type, method, AutoConfig.from_pretrained(folder))
    recipe = Recipe("cell", method, 0.5, quantize)
    if refusal is not None:
        with pytest.raises(InputError) as error:
            compress(str(folder), recipe, out, list(CORPUS))
        message = str(error.value)
        assert message == refusal and "\n" not in message
        assert message.startswith(f"{method} does not support {FAMILIES[model_type].name} (")
        assert not (out / "cell").exists()
        return None
    manifest = compress(str(folder), recipe, out, list(CORPUS))
    if quantize is None:
        assert manifest.parity <= PARITY_LIMIT
    if method != "none":
        assert manifest.parameters < manifest.parameters_original
    return manifest


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_plain_export_serves_what_pytorch_computes(tiny, exported, family):
    classifier = load_classifier(str(tiny[family]))
    folder = exported / family
    inputs = [i.name for i in onnx.load(folder / "model.onnx").graph.input]
    # token_type_ids only where the model reads them: DeBERTa-v3 has no type embeddings.
    assert inputs == ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "electra" else [])
    for batch in (PARITY_SENTENCES, PAIRS):
        actual, arrays = served(folder, batch, classifier.max_length)
        expected, encoded = pytorch(classifier, batch)
        assert np.array_equal(arrays["input_ids"], encoded["input_ids"].numpy())
        assert np.abs(actual - expected).max() <= PARITY_LIMIT
        assert expected.std(0).min() > 0.01  # the scores move with the input, so the match means something


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_int8_quantizes_every_family(tiny, exported, family):
    classifier = load_classifier(str(tiny[family]))
    fp32, int8 = exported / family, exported / f"{family}-int8"
    graph = onnx.load(int8 / "model.onnx").graph
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 4 * 2  # at least the four per layer
    # The weights, not the file: a tiny model's file is mostly graph, which quantization grows.
    assert weight_bytes(graph) < weight_bytes(onnx.load(fp32 / "model.onnx").graph) / 3
    expected, _ = pytorch(classifier, PARITY_SENTENCES)
    assert np.abs(served(int8, PARITY_SENTENCES, classifier.max_length)[0] - expected).max() < INT8_DRIFT


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_method_writes_a_variant_or_refuses(tiny, tmp_path, family, method):
    outcome(tiny[family], family, method, tmp_path)


def test_only_modernbert_refuses_and_only_the_per_layer_methods():
    """The refusals the table holds for the tiny checkpoints (DeBERTa-v2's applies only
    with a convolution, which tests/families.py's DeBERTa-v3 layout has not)."""
    configs = {family: tiny_family_classifier(family)[0].config for family in TINY_FAMILIES}
    refused = {(f, m) for f, config in configs.items() for m in METHODS if refusal_message(f, m, config)}
    assert refused == {("modernbert", "prune"), ("modernbert", "drop-layers")}


def test_deberta_with_a_convolution_refuses_drop_layers():
    model, tokenizer = tiny_family_classifier("deberta-v2")
    model.config.conv_kernel_size = 3
    classifier = Classifier(model, tokenizer, "tiny", 32)
    with pytest.raises(InputError, match=r"^drop-layers does not support DeBERTa-v2 with conv_kernel_size set \("):
        drop_layers.compress(classifier, 0.5, list(CORPUS))


@pytest.mark.parametrize("method", ["prune", "drop-layers"])
def test_the_command_line_refuses_modernbert_in_one_line(tiny, tmp_path, capsys, method):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(CORPUS))
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(tiny["modernbert"]), "--method", method, "--calibration", str(calibration),
              "--name", "x", "--out", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"compressor: error: {method} does not support ModernBERT ("), err
    assert err.endswith("supported: BERT, DistilBERT, RoBERTa, ELECTRA, XLM-RoBERTa, DeBERTa-v2"
                        + (" without conv_kernel_size" if method == "drop-layers" else ""))


@pytest.mark.parametrize("family", ["electra", "xlm-roberta", "deberta-v2"])
def test_head_removal_computes_what_the_masks_computed(tiny, family):
    """transformers' prune_heads for ELECTRA and XLM-R, layers.prune_heads' own for DeBERTa-v2,
    whose relative-position scores run through the same query and key projections."""
    classifier = load_classifier(str(tiny[family]))
    layers = layers_of(classifier.model)
    torch.manual_seed(1)
    head_mask = torch.rand(len(layers), layers[0].heads) + 0.5
    neuron_mask = torch.rand(len(layers), layers[0].ffn_in.out_features) + 0.5
    head_mask[0, :2] = 0
    head_mask[1, 3] = 0
    neuron_mask[:, ::3] = 0
    batch = classifier.tokenizer(CORPUS[:4], padding=True, return_tensors="pt")
    with torch.no_grad(), prune.masked(classifier.model, head_mask, neuron_mask):
        expected = classifier.model(**batch).logits
    prune.remove_units(classifier.model, head_mask, neuron_mask)
    with torch.no_grad():
        assert torch.allclose(classifier.model(**batch).logits, expected, atol=1e-5)
    assert [b.heads for b in layers_of(classifier.model)] == [layers[0].heads - 2, layers[0].heads - 1]


def test_deberta_refits_of_the_layer_input_leave_the_position_scores_alone(tiny):
    """Its query and key also project the relative-position embeddings: drop-layers' refit
    of them gets position projections of their own first, which change nothing by themselves."""
    classifier = load_classifier(str(tiny["deberta-v2"]))
    batch = classifier.tokenizer(CORPUS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = classifier.model(**batch).logits
        layer = layers_of(classifier.model)[1]
        readers = input_readers(layer)
        assert torch.equal(classifier.model(**batch).logits, before)
        attention = layer.module.attention.self
        assert readers == [attention.query_proj, attention.key_proj, attention.value_proj]
        position = [p.clone() for p in [*attention.pos_key_proj.parameters(), *attention.pos_query_proj.parameters()]]
        for linear in readers:
            linear.weight.mul_(2)
        assert all(torch.equal(a, b) for a, b in zip(
            [*attention.pos_key_proj.parameters(), *attention.pos_query_proj.parameters()], position))


def test_electra_layer_zero_repair_refits_the_embedding_projection(tiny):
    """ELECTRA's narrower embeddings reach layer 0 through a projection: inputs+norm scales its rows."""
    classifier = load_classifier(str(tiny["electra"]))
    data = list(batches(classifier.tokenizer, CORPUS, classifier.max_length))
    target = drop_layers.logits_of(classifier.model, data)
    cost = {}
    for how in ("none", "inputs+norm"):
        model = load_classifier(str(tiny["electra"])).model
        projection = model.electra.embeddings_project.weight.clone()
        drop_layers.repair(classifier.model, model, [0], data, how, (data, target))
        assert torch.equal(model.electra.embeddings_project.weight, projection) == (how == "none")
        cost[how] = drop_layers.divergence(target, drop_layers.logits_of(model, data), classifier.task)
    assert cost["inputs+norm"] < cost["none"] / 2, cost


def test_the_docs_table_is_the_code_table():
    assert markdown_table() in DOCS.read_text(encoding="utf-8"), \
        "docs/methods.md's families table differs from compressor.families.markdown_table(): paste it in"


def test_refusals_name_real_methods():
    assert {m for family in FAMILIES.values() for m in family.refusals} <= set(METHODS)
    assert set(TINY_FAMILIES) <= set(FAMILIES)


# --- the whole matrix: CI's `make test-all` -------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHODS if m not in FAST_METHODS])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_method_writes_a_variant_or_refuses(tiny, tmp_path, family, method):
    outcome(tiny[family], family, method, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [q for q, row in QUANTIZERS.items() if q != "int8" and not row.exact])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_quantizer_runs(tiny, exported, tmp_path, family, quantize):
    """The quantized variant is written and says so, its weights shrank, and on ONNX Runtime
    (where the export measures it) it drifts from PyTorch by the drift its manifest records,
    on the inputs that was measured on: more than fp32 rounding, so the graph really is
    quantized."""
    manifest = outcome(tiny[family], family, "none", tmp_path, quantize)
    assert manifest.method == quantize and manifest.settings["quantize"] == quantize
    folder = tmp_path / "cell"
    plain = weight_bytes(onnx.load(exported / family / "model.onnx").graph)
    assert weight_bytes(onnx.load(folder / "model.onnx").graph) < 0.6 * plain
    opened = open_on(folder, Runtime())
    inputs = parity_inputs(list(CORPUS))
    logits = opened.backend.run(encode(opened.tokenizer, inputs).arrays)
    assert logits.shape == (len(inputs), len(manifest.labels)) and np.isfinite(logits).all()
    drift = float(np.abs(logits - pytorch(load_classifier(str(tiny[family])), inputs)[0]).max())
    assert drift == pytest.approx(manifest.parity, rel=1e-3, abs=1e-6)
    assert drift > 10 * PARITY_LIMIT


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [q for q, row in QUANTIZERS.items() if row.exact])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_exact_graph_rewrite_keeps_fp32_parity(tiny, tmp_path, family, quantize):
    """A rewrite that rounds nothing (fused operators) is held to the fp32 limit, whatever
    it managed to fuse in this family, and its answers do not move with the batch."""
    manifest = outcome(tiny[family], family, "none", tmp_path, quantize)
    assert manifest.settings["quantize"] == quantize and manifest.parity <= PARITY_LIMIT
    assert manifest.batch_invariant
