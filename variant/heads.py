"""What a classifier's logits mean: one row per task of its head, and every rule that depends on it.

A checkpoint's config says how it was trained (transformers' `problem_type`), and so how
its logits are read:

| task           | activate        | decision (compared between variants)      | agreement                         | v2 outputs              | labelled metric |
|----------------|-----------------|-------------------------------------------|-----------------------------------|-------------------------|-----------------|
| `single_label` | softmax         | top-1 index                               | share of inputs with the same top-1 | logits, probabilities | accuracy        |
| `multi_label`  | sigmoid / label | label on at or above the threshold        | share of (input, label) decisions | logits, probabilities   | accuracy of the decisions |
| `regression`   | none            | the score itself                          | Pearson correlation (and MAE)     | logits, scores          | pearson         |

The threshold is SLIMSERVE_MULTI_LABEL_THRESHOLD in the service (default 0.5). The
compressor's `evaluate` and `search`, /v1/compare, shadow sampling, cascades and live
feedback all read this table; the torch signals the compression methods take from a
head (compressor/head_signals.py) have one row per task too. Adding a task is a row in
each, and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

THRESHOLD = 0.5  # multi_label: a label is on at or above this score


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # no overflow warning for large |logit|


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 1.0 when both are constant and equal, 0.0 when one is constant."""
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def top1_difference(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|Δ| of the variant's top-1 probability against the reference's probability of that label."""
    top = scores.argmax(axis=-1)
    rows = np.arange(len(top))
    return np.abs(scores[rows, top] - reference[rows, top])


def largest_difference(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.abs(scores - reference).max(axis=-1)


def top1_truth(cells: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    return np.array([c[0] for c in cells])


def labels_truth(cells: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    truth = np.zeros(shape, dtype=bool)
    for row, ids in enumerate(cells):
        truth[row, ids] = True
    return truth


@dataclass(frozen=True)
class Head:
    """How one task's logits are read. Arrays are [inputs, labels] unless said otherwise."""

    activate: Callable[[np.ndarray], np.ndarray]  # logits → scores as the service answers them
    decide: Callable[[np.ndarray, float], np.ndarray]  # scores, threshold → what two variants are compared on
    agrees_per_input: bool  # decisions compare input by input (False: agreement is a correlation over inputs)
    difference: Callable[[np.ndarray, np.ndarray], np.ndarray]  # per input, |Δ| of the deciding score
    outputs: tuple[str, str]  # v2 output names: the logits, then the scores
    metric: str  # what labelled data scores: "accuracy" or "pearson"
    truth: Callable[[list[list[int]], tuple[int, int]], np.ndarray] | None  # label ids per input → decisions
    relevance: Callable[[int], int | None]  # labels → the column /v1/rerank ranks by, or None
    probability: Callable[[np.ndarray], np.ndarray]  # a relevance column's score → a probability
    many_labels: bool = False  # a data cell may list several labels


def identity(x: np.ndarray) -> np.ndarray:
    return x


# Rerank: a two-class model ranks by its second class (the positive one: "equivalent",
# "entailment", "relevant" by the usual convention); a cross-encoder with one output
# (regression, or one sigmoid label) by that output, a regression score through a sigmoid
# as rerankers are trained with a binary cross-entropy on it.
HEADS: dict[str, Head] = {
    "single_label": Head(softmax, lambda s, t: s.argmax(axis=-1), True, top1_difference,
                         ("logits", "probabilities"), "accuracy", top1_truth,
                         lambda n: 1 if n == 2 else None, identity),
    "multi_label": Head(sigmoid, lambda s, t: s >= t, True, largest_difference,
                        ("logits", "probabilities"), "accuracy", labels_truth,
                        lambda n: 0 if n == 1 else None, identity, many_labels=True),
    "regression": Head(identity, lambda s, t: s[:, 0], False, largest_difference,
                       ("logits", "scores"), "pearson", None,
                       lambda n: 0 if n == 1 else None, sigmoid),
}
Task = Literal[tuple(HEADS)]
PROBLEM_TYPES: dict[str, Task] = {  # transformers' config.problem_type
    "single_label_classification": "single_label",
    "multi_label_classification": "multi_label",
    "regression": "regression",
}


def task_of(problem_type: str | None, num_labels: int) -> Task:
    """The task transformers trains a head for: problem_type when set, else regression for
    one output and single-label classification otherwise (its own rule)."""
    if problem_type in PROBLEM_TYPES:
        return PROBLEM_TYPES[problem_type]
    return "regression" if num_labels == 1 else "single_label"


def activate(task: Task, logits: np.ndarray) -> np.ndarray:
    return HEADS[task].activate(logits)


def decisions(task: Task, scores: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    return HEADS[task].decide(scores, threshold)


def row_agreement(task: Task, scores: np.ndarray, reference: np.ndarray,
                  threshold: float = THRESHOLD) -> np.ndarray | None:
    """Per input, how far a variant agrees with the reference, in [0, 1]; None where the
    task's agreement is a correlation over many inputs, not a per-input figure."""
    if not HEADS[task].agrees_per_input:
        return None
    same = decisions(task, scores, threshold) == decisions(task, reference, threshold)
    return same.astype(np.float64) if same.ndim == 1 else same.mean(axis=1)


def score_difference(task: Task, scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return HEADS[task].difference(scores, reference)


def agreement(task: Task, scores: np.ndarray, reference: np.ndarray, threshold: float = THRESHOLD
              ) -> dict[str, float]:
    """Agreement of a variant with the reference over the same inputs. `agreement` is the
    headline figure every task has (1.0 = the same answers); a correlation adds `mae`."""
    per_input = row_agreement(task, scores, reference, threshold)
    if per_input is not None:
        return {"agreement": float(per_input.mean())}
    mine, theirs = (decisions(task, x, threshold).astype(np.float64) for x in (scores, reference))
    return {"agreement": correlation(mine, theirs), "mae": float(np.abs(mine - theirs).mean())}


def hits(task: Task, decided: np.ndarray, label_ids: list[list[int]], labels: int) -> np.ndarray:
    """Which of the decisions `decided` (from `decisions`, for inputs of a head with
    `labels` labels) equal the labels' (label ids per input): one per input for a top-1,
    one per (input, label) where each label is decided. `compressor evaluate`'s accuracy
    is their share; live feedback counts them."""
    return decided == HEADS[task].truth(label_ids, (len(decided), labels))


def labelled_score(task: Task, scores: np.ndarray, label_ids: list[list[int]] | list[float],
                   threshold: float = THRESHOLD) -> float:
    """How well `scores` match labelled data: the share of decisions equal to the labels'
    (label ids per input), or, for a task without labels, the correlation with the numbers."""
    if HEADS[task].truth is None:
        return correlation(decisions(task, scores, threshold).astype(np.float64), np.asarray(label_ids, dtype=float))
    return float(hits(task, decisions(task, scores, threshold), label_ids, scores.shape[1]).mean())


Signature = tuple[str, tuple[str, ...]]  # a head as compared: (task, labels)


def comparable(name: str, head: Signature, reference: str, reference_head: Signature) -> str | None:
    """Why `name`'s answers cannot be compared with `reference`'s, or None: agreement only
    means something between heads of the same task over the same labels. The one rule
    /v1/compare, shadow sampling, cascades and `compressor evaluate` follow."""
    if (head[0], tuple(head[1])) == (reference_head[0], tuple(reference_head[1])):
        return None
    return (f"{name!r} ({head[0]}, {len(head[1])} labels) cannot be compared with the reference "
            f"{reference!r} ({reference_head[0]}, {len(reference_head[1])} labels)")


def relevance(task: Task, labels: int) -> int | None:
    """The score column that ranks passages for /v1/rerank, or None when the head has no
    single relevance score."""
    return HEADS[task].relevance(labels)


def relevance_scores(task: Task, logits: np.ndarray, scores: np.ndarray, column: int, raw: bool) -> np.ndarray:
    """Per input, the score /v1/rerank ranks by: the relevance column's logit when `raw`,
    else a probability."""
    if raw:
        return logits[:, column].astype(np.float64)
    return HEADS[task].probability(scores[:, column].astype(np.float64))
