"""Data-aware SVD (svd-aware, asvd) and Fisher-weighted SVD (fwsvd) on tiny models."""

import copy

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import torch
from conftest import CORPUS

from compressor.calibration import fisher_diagonal, input_statistics
from compressor.checkpoint import Classifier, load_classifier
from compressor.errors import InputError
from compressor.methods import aware, svd
from compressor.methods.linears import encoder_linears
from compressor.pipeline import Recipe, compress
from compressor.recipe import METHODS


def fresh(checkpoints, arch="bert") -> Classifier:
    return load_classifier(str(checkpoints[arch]))


def test_whitened_factors_minimise_the_error_on_calibration_inputs():
    """Truncating W·S with S·Sᵀ = XᵀX is optimal for ‖X(W − W')ᵀ‖: it must beat plain SVD
    on the very inputs it saw, at every rank, and plain SVD must win on the weights."""
    torch.manual_seed(0)
    x = torch.randn(500, 24) @ torch.randn(24, 24)  # correlated inputs
    x[:, :4] *= 10  # a few loud channels
    weight = torch.randn(16, 24)
    s = aware.whitening((x.T @ x).double())
    for rank in (2, 4, 8):
        plain_down, plain_up = svd.factorize(weight, rank)
        white_down, white_up = svd.factorize(weight, rank, s)
        out_error = lambda down, up: torch.linalg.norm(x @ weight.T - x @ (up @ down).T)
        assert out_error(white_down, white_up) < out_error(plain_down, plain_up)
        assert torch.linalg.norm(weight - plain_up @ plain_down) <= torch.linalg.norm(weight - white_up @ white_down)


def test_diagonal_scaling_round_trips_at_full_rank():
    torch.manual_seed(0)
    weight, scale = torch.randn(12, 8), torch.rand(8) + 0.1
    down, up = svd.factorize(weight, 8, scale)
    assert torch.allclose(up @ down, weight, atol=1e-4)


def test_whitening_survives_singular_inputs():
    x = torch.randn(3, 10, dtype=torch.float64)  # 3 samples in 10 dimensions: rank 3
    s = aware.whitening(x.T @ x)
    assert torch.allclose(s @ s.T, x.T @ x, atol=1e-3)


def test_input_statistics_skip_padding(checkpoints):
    classifier = fresh(checkpoints)
    linears = encoder_linears(classifier.model)
    texts = ["short", "a much longer sentence with many more words in it"]
    both = input_statistics(classifier.model, classifier.tokenizer, texts, linears, classifier.max_length)
    alone = [input_statistics(classifier.model, classifier.tokenizer, [t], linears, classifier.max_length) for t in texts]
    name = next(iter(linears))
    assert both[name].tokens == alone[0][name].tokens + alone[1][name].tokens
    assert torch.allclose(both[name].gram, alone[0][name].gram + alone[1][name].gram, rtol=1e-4, atol=1e-6)


def test_fisher_uses_the_models_own_predictions(checkpoints):
    classifier = fresh(checkpoints)
    params = {n: l.weight for n, l in encoder_linears(classifier.model).items()}
    f = fisher_diagonal(classifier.model, classifier.tokenizer, CORPUS[:4], params, classifier.max_length,
                        classifier.task)
    assert set(f) == set(params) and all(v.shape == params[n].shape for n, v in f.items())
    assert all((v >= 0).all() and v.sum() > 0 for v in f.values())
    assert all(p.grad is None for p in classifier.model.parameters())  # no gradients left behind


@pytest.mark.parametrize("method", ["svd-aware", "asvd", "fwsvd"])
def test_budget_matches_plain_svd(checkpoints, method):
    plain, aware_model = fresh(checkpoints), fresh(checkpoints)
    svd.compress(plain, 0.5)
    settings = METHODS[method].implementation()(aware_model, 0.5, CORPUS)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(aware_model.model) == count(plain.model)
    assert settings["calibration_texts"] == len(CORPUS) and settings["ratio"] == 0.5


@pytest.mark.parametrize("method", ["svd-aware", "fwsvd"])
def test_aware_methods_stay_closer_to_the_original_than_plain_svd(checkpoints, method):
    """On the calibration text itself, the data-aware model's logits drift less."""
    original = fresh(checkpoints)
    plain, informed = (Classifier(copy.deepcopy(original.model), original.tokenizer, original.base_model,
                                  original.max_length) for _ in range(2))
    svd.compress(plain, 0.3)
    METHODS[method].implementation()(informed, 0.3, CORPUS)
    batch = original.tokenizer(CORPUS, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = original.model(**batch).logits
        drift = lambda c: (c.model(**batch).logits - reference).norm()
        assert drift(informed) < drift(plain)


@pytest.mark.parametrize("method", ["svd-aware", "asvd", "fwsvd"])
def test_exports_match_the_compressed_model(checkpoints, tmp_path, method):
    manifest = compress(str(checkpoints["roberta"]), Recipe("v", method, 0.5), tmp_path / "models", CORPUS)
    assert manifest.parity < 1e-4 and manifest.method == method
    assert manifest.settings[method]["factorized_layers"] > 0


@pytest.mark.parametrize("method", ["svd-aware", "asvd", "fwsvd"])
def test_data_aware_methods_need_calibration(checkpoints, tmp_path, method):
    with pytest.raises(InputError, match=f"method {method} needs --calibration"):
        compress(str(checkpoints["bert"]), Recipe("v", method, 0.5), tmp_path)
    assert list(tmp_path.iterdir()) == []
