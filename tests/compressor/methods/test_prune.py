"""Retraining-free structured pruning (Kwon et al. 2022) on tiny models."""

import copy

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import torch
from conftest import CORPUS

from compressor.checkpoint import load_classifier, parameter_count
from compressor.methods import prune
from compressor.methods.layers import layers_of
from compressor.pipeline import Recipe, compress


def test_search_fills_the_budget_and_keeps_every_layer_alive():
    torch.manual_seed(0)
    heads, neurons = torch.rand(3, 4), torch.rand(3, 16)
    head_cost, neuron_cost = 10.0, 1.0
    total = 3 * 4 * head_cost + 3 * 16 * neuron_cost
    for ratio in (0.2, 0.5, 0.8):
        hm, nm = prune.search(heads, neurons, head_cost, neuron_cost, ratio * total)
        cost = hm.sum() * head_cost + nm.sum() * neuron_cost
        assert ratio * total - head_cost <= cost <= ratio * total
        assert (hm.sum(1) >= 1).all() and (nm.sum(1) >= 1).all()


def test_search_prefers_important_units():
    heads = torch.tensor([[9.0, 0.1], [0.2, 8.0]])
    neurons = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 6.0]])
    hm, nm = prune.search(heads, neurons, 2.0, 1.0, budget=2 * 2.0 + 2 * 1.0)
    assert hm.tolist() == [[1, 0], [0, 1]] and nm.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]


def test_rearrangement_prunes_units_whose_gradients_cancel():
    """Diagonal importance would prune the quiet unit 2; the pair 0 and 1 cancel out, so
    pruning both costs less."""
    grads = torch.tensor([[1.0, -1.0, 0.8, 5.0], [1.0, -1.0, 0.8, 5.0]])  # [batches, units]
    mask = torch.tensor([0.0, 1.0, 0.0, 1.0])  # two pruned
    assert prune.rearrange(mask, grads).tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_physical_removal_computes_what_the_masks_computed(checkpoints, arch):
    classifier = load_classifier(str(checkpoints[arch]))
    layers = layers_of(classifier.model)
    torch.manual_seed(1)
    head_mask = torch.rand(len(layers), layers[0].heads) + 0.5
    neuron_mask = torch.rand(len(layers), layers[0].ffn_in.out_features) + 0.5
    head_mask[0, :2] = 0
    head_mask[1, 1] = 0
    neuron_mask[:, ::3] = 0
    batch = classifier.tokenizer(CORPUS[:4], padding=True, return_tensors="pt")
    with torch.no_grad(), prune.masked(classifier.model, head_mask, neuron_mask):
        expected = classifier.model(**batch).logits
    before = parameter_count(classifier.model)
    prune.remove_units(classifier.model, head_mask, neuron_mask)
    with torch.no_grad():
        actual = classifier.model(**batch).logits
    assert torch.allclose(actual, expected, atol=1e-5)
    after = layers_of(classifier.model)
    assert [b.heads for b in after] == [layers[0].heads - 2, layers[0].heads - 1]
    assert all(b.ffn_in.out_features == (neuron_mask[0] != 0).sum() for b in after)
    assert parameter_count(classifier.model) < before


def attention_error(model, block, batch, head_mask, neuron_mask) -> float:
    """‖pruned attention sublayer output − original‖ (before LayerNorm) on the batch."""
    x_t, ctx_t = prune.layer_inputs(model, [block.query, block.attention_out], batch)
    with prune.masked(model, head_mask, neuron_mask):
        x_s, ctx_s = prune.layer_inputs(model, [block.query, block.attention_out], batch)  # ctx already masked
    with torch.no_grad():  # outside `masked`: the hook must not scale ctx_s a second time
        return float((block.attention_out(ctx_s) + x_s - block.attention_out(ctx_t) - x_t).norm())


def test_rescaling_never_worsens_a_sublayer(checkpoints):
    """Scale 1 is a feasible point of the ridge problem, so the solved scales fit the
    original attention output at least as well as the plain 0/1 mask does."""
    classifier = load_classifier(str(checkpoints["bert"]))
    model = classifier.model
    heads, neurons = prune.mask_gradients(classifier, CORPUS)
    layers = layers_of(model)
    hidden = layers[0].query.in_features
    head_cost, neuron_cost = 4 * hidden * layers[0].head_size, 2 * hidden
    total = len(layers) * (layers[0].heads * head_cost + layers[0].ffn_in.out_features * neuron_cost)
    head_mask, neuron_mask = prune.search(heads.pow(2).sum(0), neurons.pow(2).sum(0), head_cost, neuron_cost, 0.4 * total)
    scaled_heads, scaled_neurons = head_mask.clone(), neuron_mask.clone()
    assert prune.rescale(classifier, scaled_heads, scaled_neurons, CORPUS) == 3  # layer 0 attention is left alone
    assert ((scaled_heads == 0) == (head_mask == 0)).all()  # rescaling never revives or kills a unit
    assert not torch.equal(scaled_heads[1], head_mask[1])

    unscaled_heads = scaled_heads.clone()
    unscaled_heads[1] = head_mask[1]
    batch = classifier.tokenizer(CORPUS, padding=True, return_tensors="pt")
    solved = attention_error(model, layers[1], batch, scaled_heads, scaled_neurons)
    assert solved < attention_error(model, layers[1], batch, unscaled_heads, scaled_neurons)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_prune_exports_smaller_with_parity(checkpoints, tmp_path, arch):
    manifest = compress(str(checkpoints[arch]), Recipe("pruned", "prune", 0.5), tmp_path, CORPUS)
    settings = manifest.settings["prune"]
    assert manifest.parity < 1e-4
    assert settings["kept"] <= 0.5 and len(settings["heads"]) == 2
    assert manifest.parameters < manifest.parameters_original


def test_pipeline_prune_then_svd_aware(checkpoints, tmp_path):
    manifest = compress(str(checkpoints["bert"]), Recipe("both", "prune+svd-aware", 0.6, "int8"), tmp_path, CORPUS)
    assert manifest.method == "prune+svd-aware+int8"
    assert set(manifest.settings) >= {"prune", "svd-aware", "quantize"}
    plain = load_classifier(str(checkpoints["bert"]))
    pruned_only = copy.deepcopy(plain)
    prune.compress(pruned_only, 0.6, CORPUS)
    assert manifest.parameters < parameter_count(pruned_only.model)


def test_pipeline_steps_take_their_own_budgets(checkpoints, tmp_path):
    manifest = compress(str(checkpoints["bert"]), Recipe("mixed", "prune@0.7+embed-ae@0.4", 0.5), tmp_path, CORPUS)
    assert manifest.method == "prune@0.7+embed-ae@0.4"
    assert manifest.settings["prune"]["ratio"] == 0.7 and manifest.settings["embed-ae"]["ratio"] == 0.4
