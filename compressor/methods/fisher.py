"""Fisher-weighted SVD (FWSVD, Hsu et al. 2022).

Plain SVD treats every weight alike; FWSVD weights each input row of W (in the paper's
[in, out] layout; a column of PyTorch's [out, in]) by the Fisher information its weights
carry for the task, Î_j = Σ_i F_ij, and truncates W·diag(√Î). The paper takes gradients of
the task loss on labelled data; offline we have none, so the loss is the cross-entropy
against the original model's own top-1 prediction on unlabeled calibration text.
"""

from __future__ import annotations

from compressor.calibration import FISHER_SAMPLE, fisher_diagonal, sample
from compressor.checkpoint import Classifier
from compressor.methods.linears import encoder_linears
from compressor.methods.svd import factorize_linears
from variant.tokenization import TextInput


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None,
             allocation: str = "uniform") -> dict:
    texts = sample(calibration, FISHER_SAMPLE, "fwsvd")
    linears = encoder_linears(classifier.model)
    fisher = fisher_diagonal(classifier.model, classifier.tokenizer, texts,
                             {name: linear.weight for name, linear in linears.items()}, classifier.max_length,
                             classifier.task)
    scales = {}
    for name, f in fisher.items():
        importance = f.double().sum(0)  # per input channel
        scales[name] = (importance + importance.mean() * 1e-6 + 1e-20).sqrt()
    return {**factorize_linears(classifier, ratio, scales, allocation, calibration), "scaling": "fisher",
            "calibration_texts": len(texts)}
