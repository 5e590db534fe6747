"""The weight-space autoencoder of Banaei et al. (ae, ae-shared, ae-linear, ae-linear-shared)."""

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import onnx
import torch
from torch import nn

from compressor.checkpoint import load_classifier, parameter_count
from compressor.methods import autoencoder
from compressor.methods.linears import FactorPair, GeneratedLinear, encoder_linears
from compressor.pipeline import Recipe, compress


@pytest.fixture(autouse=True)
def few_epochs(monkeypatch):
    # Tiny random matrices need no long fit; the method's own 100 epochs are for real models.
    monkeypatch.setattr(autoencoder, "EPOCHS", 4)


def test_latent_size_is_the_largest_that_fits():
    for linear in (False, True):
        k = autoencoder.latent_size(0.5, 1536, 384, linear)
        assert autoencoder.stored(k, 1536, 384, linear) <= 0.5 * 1536 * 384
        assert autoencoder.stored(k + 1, 1536, 384, linear) > 0.5 * 1536 * 384
    # The non-linear decoder (k → 2k → 4k → width) costs more, so it gets fewer latents.
    assert autoencoder.latent_size(0.5, 384, 384, False) < autoencoder.latent_size(0.5, 384, 384, True)
    assert autoencoder.latent_size(0.001, 8, 8, False) == 0


def test_rows_run_along_the_longer_common_side():
    assert autoencoder.orientation([(1536, 384)]) is False  # rows are outputs, 384 wide
    assert autoencoder.orientation([(384, 1536)]) is True  # rows are inputs, 384 wide
    assert autoencoder.orientation([(100, 384), (90, 384)]) is False  # pruned outputs
    assert autoencoder.orientation([(384, 100), (384, 90)]) is True
    assert autoencoder.orientation([(100, 90), (80, 70)]) is None


@pytest.mark.parametrize("linear", [False, True])
def test_rebuilt_directions_improve_as_the_latent_grows(linear):
    torch.manual_seed(0)
    rows = torch.randn(128, 4) @ torch.randn(4, 16)
    # The linear pair starts at PCA, exact at k = 4; the non-linear one learns from random weights.
    epochs = 5 if linear else 300
    cosines = [autoencoder.fit(rows, k, linear, epochs=epochs).mean_cosine for k in (1, 4)]
    assert cosines[0] < cosines[1]
    assert cosines[1] > (0.999 if linear else 0.85)


def test_norms_are_kept_and_the_global_random_state_is_not_touched():
    rows = torch.randn(64, 16)
    state = torch.get_rng_state()
    fitted = autoencoder.fit(rows, 4, False, epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    rebuilt = autoencoder.rescaled(fitted.decoder(fitted.latents), fitted.norms)
    assert torch.allclose(rebuilt.norm(dim=1), fitted.norms, rtol=1e-4)
    assert isinstance(fitted.decoder[-1], nn.Tanh)


@pytest.mark.parametrize("transposed", [False, True])
def test_the_linear_decoder_runs_as_two_linears(transposed):
    torch.manual_seed(0)
    rows = torch.randn(40, 12)
    fitted = autoencoder.fit(rows, 5, True, epochs=2)
    weight = autoencoder.rescaled(fitted.decoder(fitted.latents), fitted.norms).detach()
    weight = weight.T if transposed else weight
    bias = torch.randn(weight.shape[0])
    pair = autoencoder.linear_pair(fitted, slice(0, 40), autoencoder.shared_linear(fitted, transposed), transposed, bias)
    x = torch.randn(3, weight.shape[1])
    with torch.no_grad():
        assert torch.allclose(pair(x), x @ weight.T + bias, atol=1e-5)
    assert pair[0].weight.shape[0] == 6  # k + 1 between the two


def stored_weights(model) -> int:
    """Weights the generated layers store, shared ones once."""
    seen = {}
    for module in model.modules():
        if isinstance(module, (GeneratedLinear, FactorPair)):
            for p in module.parameters():
                if p.dim() >= 1 and not (isinstance(module, GeneratedLinear) and p is module.bias):
                    seen[id(p)] = p.numel()
    return sum(seen.values())


@pytest.mark.parametrize("method", ["ae", "ae-shared", "ae-linear", "ae-linear-shared"])
def test_stored_weights_meet_the_budget(checkpoints, method):
    classifier = load_classifier(str(checkpoints["bert"]))
    linears = encoder_linears(classifier.model)
    dense = sum(l.weight.numel() for l in linears.values())
    before = parameter_count(classifier.model)
    shared, linear = method.endswith("shared"), "linear" in method
    settings = autoencoder.compress(classifier, 0.5, shared=shared, linear=linear)
    assert settings["dense_layers"] == 0 and encoder_linears(classifier.model) == {}
    biases = sum(l.bias.numel() for l in linears.values())
    stored = stored_weights(classifier.model) - (biases if linear else 0)
    assert 0.3 * dense < stored <= 0.5 * dense
    assert parameter_count(classifier.model) == before - dense + stored


def test_the_shared_decoder_is_one_module_and_one_copy_in_the_file(checkpoints, tmp_path):
    classifier = load_classifier(str(checkpoints["bert"]))
    autoencoder.compress(classifier, 0.5, shared=True, linear=False)
    generated = {n: m for n, m in classifier.model.named_modules() if isinstance(m, GeneratedLinear)}
    queries = [m for n, m in generated.items() if n.endswith("self.query")]
    assert len(queries) == 2 and queries[0].generate.decoder is queries[1].generate.decoder
    manifest = compress(str(checkpoints["bert"]), Recipe("shared", "ae-shared", 0.5), tmp_path)
    graph = onnx.load(str(tmp_path / "shared" / "model.onnx")).graph
    decoders = [i.name for i in graph.initializer if "query.generate.decoder" in i.name and i.name.endswith("0.weight")]
    assert len(decoders) == 1
    assert manifest.parity < 1e-4


@pytest.mark.parametrize("method", ["ae", "ae-linear-shared"])
def test_export_matches_and_int8_stores_the_factors(checkpoints, tmp_path, method):
    plain = compress(str(checkpoints["bert"]), Recipe("plain"), tmp_path)
    fp32 = compress(str(checkpoints["bert"]), Recipe("fp32", method, 0.5), tmp_path)
    int8 = compress(str(checkpoints["bert"]), Recipe("int8", method, 0.5, "int8"), tmp_path)
    assert fp32.parity < 1e-4 and int8.parity < 0.05
    assert fp32.parameters < plain.parameters
    graph = onnx.load(str(tmp_path / "int8" / "model.onnx")).graph
    if method == "ae":  # generated weights: the factors themselves are int8 in the file
        assert int8.settings["factors_int8"] > 0
        assert any(i.name.endswith("latents/stored_int8") for i in graph.initializer)
    else:  # two Linears: ordinary quantized MatMuls, the shared factor among them
        assert "factors_int8" not in int8.settings
        assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 2 * 6 * 2
