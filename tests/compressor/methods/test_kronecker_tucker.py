"""Nearest Kronecker products and shared-factor Tucker, both rebuilt in the graph."""

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

import torch

from compressor.checkpoint import load_classifier, parameter_count
from compressor.methods import kronecker, tucker
from compressor.methods.linears import GeneratedLinear, encoder_linears
from compressor.pipeline import Recipe, compress
from compressor.report import weight_flops_per_token


def test_factor_shapes_are_the_divisors_nearest_the_root():
    assert kronecker.split(384) == (16, 24)
    assert kronecker.split(1536) == (32, 48)
    assert kronecker.split(36) == (6, 6)
    assert kronecker.split(7) == (1, 7)  # a prime has no useful split


def test_a_sum_of_kronecker_products_is_found_exactly():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, 3), torch.randn(3, 5, 4)  # the shapes split() picks for 20 × 12
    weight = sum(torch.kron(a[i], b[i]) for i in range(3))
    fa, fb = kronecker.nearest_kronecker(weight, 3)
    rebuilt = kronecker.KroneckerSum(fa, fb)()
    assert rebuilt.shape == weight.shape and torch.allclose(rebuilt, weight, atol=1e-4)


def test_kronecker_error_falls_as_terms_grow():
    torch.manual_seed(0)
    weight = torch.randn(24, 36)
    errors = [torch.linalg.norm(weight - kronecker.KroneckerSum(*kronecker.nearest_kronecker(weight, r))()).item()
              for r in (1, 4, 12, 24)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


def test_tucker_error_falls_as_rank_grows_and_full_rank_is_exact():
    torch.manual_seed(0)
    blocks = torch.randn(6, 16, 16)
    errors = []
    for r in (2, 6, 12, 16):
        u, vt, cores = tucker.shared_tucker(blocks, r)
        assert u.shape == (16, r) and vt.shape == (r, 16) and cores.shape == (6, r, r)
        errors.append(torch.linalg.norm(blocks - u @ cores @ vt).item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


def test_tucker_rank_formula():
    r = tucker.rank_for(0.5, 72, 384)
    assert 72 * r * r + 2 * 384 * r <= 0.5 * 72 * 384 * 384 < 72 * (r + 1) ** 2 + 2 * 384 * (r + 1)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_kronecker_meets_the_budget(checkpoints, arch):
    classifier = load_classifier(str(checkpoints[arch]))
    linears = encoder_linears(classifier.model)
    dense = sum(l.weight.numel() for l in linears.values())
    before = parameter_count(classifier.model)
    kronecker.compress(classifier, 0.5)
    generated = [m for m in classifier.model.modules() if isinstance(m, GeneratedLinear)]
    assert len(generated) == len(linears)
    stored = sum(m.generate.a.numel() + m.generate.b.numel() for m in generated)
    assert stored <= 0.5 * dense
    assert parameter_count(classifier.model) == before - dense + stored


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
def test_tucker_shares_its_bases_and_meets_the_budget(checkpoints, arch):
    classifier = load_classifier(str(checkpoints[arch]))
    dense = sum(l.weight.numel() for l in encoder_linears(classifier.model).values())
    before = parameter_count(classifier.model)
    settings = tucker.compress(classifier, 0.5)
    generated = [m for m in classifier.model.modules() if isinstance(m, GeneratedLinear)]
    assert len({id(m.generate.bases) for m in generated}) == 1
    hidden, r, n = classifier.model.config.hidden_size, settings["rank"], settings["blocks"]
    stored = n * r * r + 2 * hidden * r
    assert stored <= 0.5 * dense and parameter_count(classifier.model) == before - dense + stored


def test_tucker_rebuilds_blocks_in_place(checkpoints):
    classifier = load_classifier(str(checkpoints["bert"]))
    weights = {n: l.weight.detach().clone() for n, l in encoder_linears(classifier.model).items()}
    tucker.compress(classifier, 1.2)  # beyond full: nothing to save, nothing changes
    assert {n: l.weight for n, l in encoder_linears(classifier.model).items()}.keys() == weights.keys()
    hidden = classifier.model.config.hidden_size
    blocks = [b for w in weights.values() for b in tucker.blocks_of(w, hidden)]
    u, vt, cores = tucker.shared_tucker(torch.stack(blocks), hidden)  # full rank: exact
    first = next(iter(weights.values()))
    rows, cols = (side // hidden for side in first.shape)
    module = tucker.TuckerBlocks(tucker.Bases(u, vt), cores[:rows * cols], (rows, cols))
    assert torch.allclose(module(), first, atol=1e-4)


@pytest.mark.parametrize("method", ["kronecker", "tucker"])
def test_file_holds_factors_while_flops_stay_dense(checkpoints, tmp_path, method):
    plain = compress(str(checkpoints["bert"]), Recipe("plain"), tmp_path)
    small = compress(str(checkpoints["bert"]), Recipe("small", method, 0.3), tmp_path)
    assert small.parity < 1e-4 and small.parameters < plain.parameters
    # ONNX Runtime folds the generators into dense weights: the per-token work is unchanged.
    assert weight_flops_per_token(tmp_path / "small" / "model.onnx") == \
        weight_flops_per_token(tmp_path / "plain" / "model.onnx")
    int8 = compress(str(checkpoints["bert"]), Recipe("small8", method, 0.3, "int8"), tmp_path)
    assert int8.settings["factors_int8"] > 0 and int8.parity < 0.05


@pytest.mark.parametrize("method", ["prune+kronecker", "embed-ae+tucker", "prune@0.7+ae-linear-shared"])
def test_pipelines_with_the_new_factorizations_compose(checkpoints, tmp_path, method):
    from conftest import CORPUS

    manifest = compress(str(checkpoints["bert"]), Recipe("piped", method, 0.5, "int8"), tmp_path, CORPUS)
    steps = [step.split("@")[0] for step in method.split("+")]
    assert set(manifest.settings) >= {*steps, "quantize"}
    assert manifest.parity < 0.05 and manifest.parameters < manifest.parameters_original


def test_one_factorization_per_pipeline(checkpoints, tmp_path):
    from compressor.errors import InputError

    for method in ("svd+tucker", "ae+kronecker", "tucker+prune"):
        with pytest.raises(InputError, match="use one method that replaces the encoder Linears|prune must come before"):
            compress(str(checkpoints["bert"]), Recipe("bad", method, 0.5), tmp_path)


def test_a_generated_weight_of_the_wrong_shape_is_refused():
    a, b = kronecker.nearest_kronecker(torch.randn(6, 8), 2)
    assert GeneratedLinear(kronecker.KroneckerSum(a, b), torch.nn.Linear(8, 6)).bias is not None
    with pytest.raises(AssertionError, match=r"a generated \(6, 8\) weight in place of a \(8, 6\) Linear"):
        GeneratedLinear(kronecker.KroneckerSum(a, b), torch.nn.Linear(6, 8))
