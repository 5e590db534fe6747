"""Sensitivity-based rank allocation for the SVD family (`--allocation sensitivity`).

Uniform allocation gives every encoder Linear the same budget. Layers differ, though:
some can lose most of their rank and the predictions barely move, others cannot lose any.
So, for each Linear and each candidate budget, factorize that one layer alone and measure
how far the model's predictions move from the original's on calibration text — the mean
KL divergence of the class distributions, a smooth stand-in for agreement. Then search one
threshold (as ASVD does): every layer takes the smallest budget whose sensitivity stays
under it, and the threshold is the lowest at which the total meets the global `ratio`.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from compressor.calibration import batches
from compressor.checkpoint import Classifier
from compressor.head_signals import head_divergence
from compressor.methods.factors import factorize, rank_for, stored
from compressor.methods.linears import encoder_linears, replace_module, two_linears
from compressor.progress import progress_options
from variant.tokenization import TextInput

CANDIDATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # a layer may also stay dense (1.0)
TEXTS = 128  # calibration texts scored per trial


@torch.no_grad()
def sensitivities(classifier: Classifier, texts: list[TextInput],
                  scales: dict[str, torch.Tensor] | None) -> dict[str, dict[float, float]]:
    """Layer → {candidate budget: mean divergence of the model with only that layer
    factorized from the original (head_signals.py's divergence: KL for classifiers)}."""
    model = classifier.model
    data = list(batches(classifier.tokenizer, texts, classifier.max_length))
    reference = [model(**b).logits for b in data]

    def divergence() -> float:
        total = sum(head_divergence(ref, model(**b).logits, classifier.task).sum() for b, ref in zip(data, reference))
        return max(0.0, float(total) / sum(len(ref) for ref in reference))  # rounding can dip below 0

    result: dict[str, dict[float, float]] = {}
    for name, linear in tqdm(encoder_linears(model).items(), desc="allocation", unit="layer",
                             **progress_options(), leave=False):
        rows, cols = linear.weight.shape
        result[name] = {1.0: 0.0}
        for candidate in CANDIDATES:
            if stored(candidate, rows, cols) >= rows * cols:
                continue
            down, up = factorize(linear.weight, rank_for(candidate, rows, cols), (scales or {}).get(name))
            replace_module(model, name, two_linears(down, up, linear))
            result[name][candidate] = divergence()
            replace_module(model, name, linear)
    return result


def allocate(sens: dict[str, dict[float, float]], shapes: dict[str, tuple[int, int]], ratio: float) -> dict[str, float]:
    """Per-layer budgets from the lowest sensitivity threshold that meets `ratio` overall."""
    budget = ratio * sum(r * c for r, c in shapes.values())

    def choose(threshold: float) -> dict[str, float]:
        return {name: min(c for c, s in options.items() if s <= threshold) for name, options in sens.items()}

    def cost(choice: dict[str, float]) -> int:
        return sum(stored(c, *shapes[name]) for name, c in choice.items())

    thresholds = sorted({s for options in sens.values() for s in options.values()})
    low, high = 0, len(thresholds) - 1  # cost falls as the threshold rises
    if cost(choose(thresholds[high])) > budget:
        return choose(thresholds[high])  # even the most aggressive choice is over: take it
    while low < high:
        mid = (low + high) // 2
        if cost(choose(thresholds[mid])) <= budget:
            high = mid
        else:
            low = mid + 1
    return choose(thresholds[low])
