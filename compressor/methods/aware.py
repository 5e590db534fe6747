"""Data-aware SVD: truncate each encoder Linear where its real inputs make errors costly.

- `svd-aware` (SVD-LLM, Wang et al. 2024; DRONE, Chen et al. 2021): with XᵀX = S·Sᵀ the
  Cholesky factor of the layer inputs' Gram matrix on calibration text, the output error
  ‖X(W − W')ᵀ‖ equals ‖(W − W')·S‖, so truncating W·S minimises the error on those
  inputs exactly, not the error on the weights.
- `asvd` (ASVD, Yuan et al. 2023): the cheaper diagonal version; scale input channel j
  by (mean |x_j|)^α, α = 0.5, so channels that carry large activations keep precision.

Both run as two Linears at inference (svd.factorize_linears does the factoring).
"""

from __future__ import annotations

import torch

from compressor.calibration import SAMPLE, input_statistics, sample
from compressor.checkpoint import Classifier
from compressor.methods.linears import encoder_linears
from compressor.methods.svd import factorize_linears
from variant.tokenization import TextInput

ALPHA = 0.5
DAMPING = 1e-6  # ridge on XᵀX, relative to its mean diagonal, for a Cholesky that exists


def whitening(gram: torch.Tensor) -> torch.Tensor:
    """Lower-triangular S with S·Sᵀ = XᵀX + λI, raising λ until the factorization exists."""
    ridge = DAMPING * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    for _ in range(8):
        factor, info = torch.linalg.cholesky_ex(gram + ridge * eye)
        if info == 0:
            return factor
        ridge *= 10
    raise ValueError("calibration inputs are degenerate: XᵀX stays singular")


def activation_scale(abs_sum: torch.Tensor, tokens: int, alpha: float = ALPHA) -> torch.Tensor:
    mean = abs_sum / max(tokens, 1)
    return mean.clamp_min(mean.max() * 1e-6 + 1e-12) ** alpha


def _statistics(classifier: Classifier, calibration: list[TextInput] | None, method: str):
    texts = sample(calibration, SAMPLE, method)
    linears = encoder_linears(classifier.model)
    stats = input_statistics(classifier.model, classifier.tokenizer, texts, linears, classifier.max_length)
    return texts, stats


def compress_whitened(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None,
                      allocation: str = "uniform") -> dict:
    texts, stats = _statistics(classifier, calibration, "svd-aware")
    scales = {name: whitening(s.gram) for name, s in stats.items()}
    return {**factorize_linears(classifier, ratio, scales, allocation, calibration), "scaling": "whitening",
            "calibration_texts": len(texts)}


def compress_scaled(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None,
                    allocation: str = "uniform") -> dict:
    texts, stats = _statistics(classifier, calibration, "asvd")
    scales = {name: activation_scale(s.abs_sum, s.tokens) for name, s in stats.items()}
    return {**factorize_linears(classifier, ratio, scales, allocation, calibration),
            "scaling": f"activation^{ALPHA}", "calibration_texts": len(texts)}
