"""Texts → class probabilities for one variant: tokenize, run, softmax.

Synchronous on purpose: the HTTP layer calls it from a worker thread, never on the
event loop. Both the /v1 and the /v2 routes go through here.
"""

from __future__ import annotations

import time

import numpy as np

from service.errors import BackendFailure, NotReady
from service.metrics import Metrics
from service.repository import Variant
from service.tokenization import TextInput, encode


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def run_logits(variant: Variant, inputs: list[TextInput], truncate: bool, metrics: Metrics) -> np.ndarray:
    if variant.state != "ready" or variant.backend is None or variant.tokenizer is None:
        raise NotReady(f"model {variant.name!r} is not ready: {variant.reason}")
    batch = encode(variant.tokenizer, inputs, truncate)
    start = time.perf_counter()
    try:
        logits = variant.backend.run(batch.arrays)
    except Exception as exc:  # a model fault fails these requests only, never the process
        raise BackendFailure(f"model {variant.name!r} failed on this batch: {exc}") from exc
    metrics.inference_duration.labels(variant.name).observe(time.perf_counter() - start)
    metrics.batch_size.labels(variant.name).observe(len(inputs))
    metrics.input_tokens.labels(variant.name).observe(batch.tokens)
    if not np.isfinite(logits).all():
        raise BackendFailure(f"model {variant.name!r} returned non-finite logits")
    return logits


def classify(variant: Variant, inputs: list[TextInput], truncate: bool, metrics: Metrics) -> np.ndarray:
    """Probabilities [len(inputs), labels]."""
    return softmax(run_logits(variant, inputs, truncate, metrics).astype(np.float64))
