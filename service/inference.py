"""Texts → class probabilities for one variant: tokenize, run, softmax.

Synchronous on purpose: the HTTP layer calls it from a worker thread, never on the
event loop. Every route that classifies goes through here.
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


def classify(variant: Variant, inputs: list[TextInput], truncate: bool, metrics: Metrics) -> np.ndarray:
    """Probabilities [len(inputs), labels]."""
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
    return softmax(logits.astype(np.float64))
