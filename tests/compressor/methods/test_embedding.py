"""Token-embedding compression with the direction loss (embed-ae) on tiny models."""

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import torch
from conftest import CORPUS
from torch import nn

from compressor.checkpoint import load_classifier, parameter_count
from compressor.methods import embedding
from compressor.pipeline import Recipe, compress


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_stored_parameters_match_the_budget(checkpoints, arch):
    classifier = load_classifier(str(checkpoints[arch]))
    vocab, hidden = classifier.model.get_input_embeddings().weight.shape
    before = parameter_count(classifier.model)
    settings = embedding.compress(classifier, 0.3)
    k = settings["latent"]
    assert k == embedding.latent_size(0.3, vocab, hidden)
    stored = vocab * k + k * hidden + hidden
    assert stored <= 0.3 * vocab * hidden < stored + vocab + hidden
    assert parameter_count(classifier.model) == before - vocab * hidden + stored


def test_direction_error_falls_as_the_latent_grows():
    torch.manual_seed(0)
    matrix = torch.randn(300, 24) @ torch.randn(24, 24)
    cosines = []
    for k in (2, 6, 12, 24):
        latents, decoder = embedding.fit_autoencoder(matrix, k, epochs=3)
        with torch.no_grad():
            cosines.append(float(nn.functional.cosine_similarity(decoder(latents), matrix, dim=1).mean()))
    assert cosines == sorted(cosines) and cosines[-1] > 0.999


def test_frequent_tokens_are_rebuilt_better_when_weighted():
    torch.manual_seed(0)
    matrix = torch.randn(400, 32)
    weight = torch.ones(400)
    weight[:20] = 200.0  # twenty "frequent" tokens
    weight /= weight.mean()
    def frequent_cosine(latents, decoder) -> float:
        with torch.no_grad():
            return float(nn.functional.cosine_similarity(decoder(latents), matrix, dim=1)[:20].mean())

    plain = frequent_cosine(*embedding.fit_autoencoder(matrix, 8, epochs=2))
    weighted = frequent_cosine(*embedding.fit_autoencoder(matrix, 8, weight, epochs=2))
    assert weighted > plain + 0.1


def test_token_weights_count_calibration_tokens(checkpoints):
    classifier = load_classifier(str(checkpoints["bert"]))
    vocab = classifier.model.get_input_embeddings().weight.shape[0]
    weight = embedding.token_weights(classifier, ["charming charming charming"], vocab)
    charming = classifier.tokenizer.convert_tokens_to_ids("charming")
    assert weight.mean() == pytest.approx(1.0) and weight.argmax() == charming


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_export_keeps_latents_and_decoder_in_the_graph(checkpoints, tmp_path, arch):
    plain = compress(str(checkpoints[arch]), Recipe("plain"), tmp_path)
    manifest = compress(str(checkpoints[arch]), Recipe("small", "embed-ae", 0.3), tmp_path, CORPUS)
    assert manifest.parity < 1e-4
    assert manifest.settings["embed-ae"]["weighting"].startswith("token frequency")
    assert manifest.parameters < plain.parameters and manifest.onnx_bytes < plain.onnx_bytes


def test_a_full_budget_keeps_the_embedding(checkpoints):
    classifier = load_classifier(str(checkpoints["bert"]))
    table = classifier.model.get_input_embeddings()
    assert embedding.compress(classifier, 1.0)["latent"] is None
    assert classifier.model.get_input_embeddings() is table


def test_fitting_leaves_the_global_random_state_and_no_gradients():
    matrix = torch.randn(50, 8)
    state = torch.get_rng_state()
    _, decoder = embedding.fit_autoencoder(matrix, 3, epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in decoder.parameters())
