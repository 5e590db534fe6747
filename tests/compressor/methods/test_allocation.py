"""Sensitivity-based rank allocation for the SVD family."""

import pytest

pytest.importorskip("torch", reason="the compression methods need torch (the [compress] extra)")

from conftest import CORPUS

from compressor.checkpoint import load_classifier
from compressor.errors import InputError
from compressor.methods import allocation
from compressor.methods.linears import encoder_linears
from compressor.methods.svd import stored
from compressor.pipeline import Recipe, compress


def test_allocation_meets_the_budget_and_spares_sensitive_layers():
    shapes = {"calm": (64, 64), "touchy": (64, 64)}
    sens = {"calm": {1.0: 0.0, 0.1: 0.01, 0.5: 0.001, 0.9: 0.0001},
            "touchy": {1.0: 0.0, 0.1: 5.0, 0.5: 1.0, 0.9: 0.02}}
    budgets = allocation.allocate(sens, shapes, ratio=0.5)
    cost = sum(stored(budgets[n], *shapes[n]) for n in shapes)
    assert cost <= 0.5 * sum(r * c for r, c in shapes.values())
    assert budgets["touchy"] > budgets["calm"]


def test_an_impossible_budget_takes_the_smallest_choice():
    shapes = {"a": (32, 32)}
    budgets = allocation.allocate({"a": {1.0: 0.0, 0.1: 1.0}}, shapes, ratio=0.01)
    assert budgets == {"a": 0.1}


@pytest.mark.parametrize("method", ["svd", "svd-aware"])
def test_sensitivity_allocation_exports_within_budget(checkpoints, tmp_path, method):
    manifest = compress(str(checkpoints["bert"]), Recipe("v", method, 0.5, allocation="sensitivity"), tmp_path, CORPUS)
    settings = manifest.settings[method]
    assert manifest.parity < 1e-4 and settings["allocation"] == "sensitivity"
    layers = encoder_linears(load_classifier(str(checkpoints["bert"])).model)
    shapes = {name.removeprefix("bert."): tuple(l.weight.shape) for name, l in layers.items()}
    assert set(settings["layer_ratios"]) == set(shapes)
    kept = sum(stored(settings["layer_ratios"][n], *shapes[n]) for n in shapes)
    assert kept <= 0.5 * sum(r * c for r, c in shapes.values())


@pytest.mark.parametrize("recipe, calibration, message", [
    (Recipe("v", "svd", 0.5, allocation="sensitivity"), None, "--allocation sensitivity needs --calibration"),
    (Recipe("v", "prune", 0.5, allocation="sensitivity"), CORPUS, "--allocation sensitivity applies to"),
    (Recipe("v", "svd", 0.5, allocation="greedy"), CORPUS, "unknown --allocation 'greedy'"),
])
def test_allocation_misuse_is_an_input_error(checkpoints, tmp_path, recipe, calibration, message):
    with pytest.raises(InputError, match=message):
        compress(str(checkpoints["bert"]), recipe, tmp_path, calibration)
