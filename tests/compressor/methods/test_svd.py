import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import torch
from torch import nn

from compressor.checkpoint import load_classifier, parameter_count
from compressor.methods import svd
from compressor.methods.linears import encoder_linears, two_linears


def linear_weights(model) -> int:
    return sum(m.weight.numel() for m in encoder_linears(model).values())


def factorized_weights(model) -> int:
    pairs = [m for m in model.modules() if isinstance(m, nn.Sequential) and all(isinstance(x, nn.Linear) for x in m)]
    return sum(m[0].weight.numel() + m[1].weight.numel() for m in pairs)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_stored_weights_meet_the_budget(checkpoints, arch, ratio):
    classifier = load_classifier(str(checkpoints[arch]))
    model = classifier.model
    before = linear_weights(model)
    layers = encoder_linears(model)
    slack = sum(sum(l.weight.shape) for l in layers.values())  # rank rounds down by < 1 per layer
    settings = svd.compress(classifier, ratio)

    kept = factorized_weights(model)
    assert settings["factorized_layers"] == len(layers)
    assert ratio * before - slack <= kept <= ratio * before
    assert encoder_linears(model) == {}  # every encoder Linear became a pair of factors
    assert parameter_count(model) < parameter_count(load_classifier(str(checkpoints[arch])).model)


def test_error_falls_as_rank_grows():
    torch.manual_seed(0)
    weight = torch.randn(48, 32)
    errors = []
    for rank in (2, 8, 16, 32):
        down, up = svd.factorize(weight, rank)
        assert down.shape == (rank, 32) and up.shape == (48, rank)
        errors.append(torch.linalg.norm(weight - up @ down).item())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-4  # full rank rebuilds the matrix


def test_factors_share_the_singular_values_evenly():
    torch.manual_seed(0)
    down, up = svd.factorize(torch.randn(40, 24), 6)
    assert torch.allclose(down.norm(dim=1), up.norm(dim=0), rtol=1e-4)


def test_rank_formula():
    assert svd.rank_for(0.5, 384, 384) == 96
    assert svd.rank_for(0.5, 1536, 384) == 153
    assert svd.rank_for(1e-6, 10, 10) == 1


def test_compressed_model_stays_close_at_generous_ratio(checkpoints):
    original = load_classifier(str(checkpoints["bert"]))
    compressed = load_classifier(str(checkpoints["bert"]))
    svd.compress(compressed, 0.9)
    batch = original.tokenizer(["a charming and often affecting journey"], return_tensors="pt")
    with torch.no_grad():
        a, b = original.model(**batch).logits, compressed.model(**batch).logits
    # Random tiny weights have a flat spectrum, so even 90% loses something — but not much.
    assert torch.allclose(a, b, atol=0.05)


def test_factors_and_embeddings_are_never_factorized_again(checkpoints):
    from compressor.methods import embedding

    classifier = load_classifier(str(checkpoints["bert"]))
    before = set(encoder_linears(classifier.model))
    embedding.compress(classifier, 0.3)
    assert set(encoder_linears(classifier.model)) == before  # the embed-ae decoder is not an encoder Linear
    svd.compress(classifier, 0.5)
    assert encoder_linears(classifier.model) == {}  # only factor pairs are left


def test_factors_of_the_wrong_shape_are_refused():
    linear = nn.Linear(8, 6)
    down, up = svd.factorize(linear.weight.detach(), 3)
    assert two_linears(down, up, linear)[1].bias is not None
    with pytest.raises(AssertionError, match=r"factors \(3, 8\) and \(6, 3\) in place of a \(8, 6\) Linear"):
        two_linears(down, up, nn.Linear(6, 8))
