"""Truncated SVD of the encoder Linears, plain or in a scaled input space.

Every encoder Linear W [out, in] becomes two Linears of rank r. Plain SVD keeps the best
rank-r approximation of W itself. The data-aware methods (aware.py, fisher.py) first scale
W's input side by a matrix S chosen so that errors on the inputs that matter cost more,
truncate W·S, and undo the scaling in the first factor:

    W ≈ up · down,   up = U_r √Σ_r,   down = √Σ_r V_rᵀ S⁻¹,   where W·S = U Σ Vᵀ

S is a vector (a diagonal: ASVD, FWSVD) or a lower-triangular matrix (SVD-LLM whitening).
The singular values are split evenly between the factors so both have the same scale,
which keeps them friendly to int8 quantization later.

Rank from the budget: a rank-r pair stores r·(in + out) weights, so keeping `ratio` of the
in·out weights gives r = ⌊ratio · in · out / (in + out)⌋. Biases stay as they are.
"""

from __future__ import annotations

import torch

from compressor.calibration import sample
from compressor.checkpoint import Classifier
from compressor.methods import allocation as allocation_search
from compressor.methods.factors import factorize, rank_for, stored
from compressor.methods.linears import encoder_linears, replace_module, two_linears
from variant.tokenization import TextInput


def factorize_linears(classifier: Classifier, ratio: float, scales: dict[str, torch.Tensor] | None = None,
                      allocation: str = "uniform", calibration: list[TextInput] | None = None) -> dict:
    """Replace every encoder Linear by its rank-r factor pair; `scales` maps a layer's name
    to its input scaling (absent: plain SVD). With sensitivity allocation each layer gets
    its own budget, the total still `ratio` of the weights (see allocation.py)."""
    model = classifier.model
    linears = encoder_linears(model)
    budgets = {name: ratio for name in linears}
    if allocation == "sensitivity":
        sens = allocation_search.sensitivities(
            classifier, sample(calibration, allocation_search.TEXTS, "--allocation sensitivity"), scales)
        budgets = allocation_search.allocate(sens, {n: tuple(l.weight.shape) for n, l in linears.items()}, ratio)
    ranks = {}
    for name, linear in linears.items():
        rows, cols = linear.weight.shape
        if stored(budgets[name], rows, cols) >= rows * cols:  # stays dense
            continue
        rank = rank_for(budgets[name], rows, cols)
        scale = scales.get(name) if scales else None
        down, up = factorize(linear.weight.detach(), rank, scale)
        replace_module(model, name, two_linears(down, up, linear))
        ranks[name] = rank
    settings = {"ratio": ratio, "allocation": allocation, "ranks": sorted(set(ranks.values())),
                "factorized_layers": len(ranks)}
    if allocation == "sensitivity":
        settings["layer_ratios"] = {name.removeprefix(model.base_model_prefix + "."): b for name, b in budgets.items()}
    return settings


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None,
             allocation: str = "uniform") -> dict:
    return factorize_linears(classifier, ratio, None, allocation, calibration)
