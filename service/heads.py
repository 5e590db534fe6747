"""What a classifier's logits mean: the task of its head, and every rule that depends on it.

A checkpoint's config says how it was trained (transformers' `problem_type`), and so how
its logits are read:

- `single_label`: one class per input; softmax over the labels, top-1 is the answer.
- `multi_label`: any number of labels per input; a sigmoid per label, a label is on at
  or above the threshold (SLIMSERVE_MULTI_LABEL_THRESHOLD, default 0.5).
- `regression`: one number per input (a similarity, a relevance score); no activation.

Agreement between two variants on the same inputs follows the task: the share of inputs
whose top-1 label matches (single_label), the share of (input, label) decisions that
match (multi_label), the correlation of the two scores and their mean absolute
difference (regression). The compressor's `evaluate` and `search`, /v1/compare and shadow
sampling all ask here.
"""

from __future__ import annotations

import numpy as np

from service.manifest import Task

THRESHOLD = 0.5  # multi_label: a label is on at or above this score
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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # no overflow warning for large |logit|


def activate(task: Task, logits: np.ndarray) -> np.ndarray:
    """Scores [inputs, labels] from logits: probabilities, per-label probabilities, or the
    logits themselves."""
    if task == "single_label":
        return softmax(logits)
    if task == "multi_label":
        return sigmoid(logits)
    return logits


def decisions(task: Task, scores: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """What an answer is compared on: the top-1 index per input [inputs], the on/off label
    matrix [inputs, labels], or the score itself [inputs]."""
    if task == "single_label":
        return scores.argmax(axis=-1)
    if task == "multi_label":
        return scores >= threshold
    return scores[:, 0]


def row_agreement(task: Task, scores: np.ndarray, reference: np.ndarray,
                  threshold: float = THRESHOLD) -> np.ndarray | None:
    """Per input, how far a variant agrees with the reference, in [0, 1]: top-1 match, or
    the share of labels decided alike. None for regression, whose agreement is a
    correlation over many inputs, not a per-input figure."""
    if task == "regression":
        return None
    mine, theirs = decisions(task, scores, threshold), decisions(task, reference, threshold)
    same = mine == theirs
    return same.astype(np.float64) if task == "single_label" else same.mean(axis=1)


def score_difference(task: Task, scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per input, |Δ| of the score that decides: the variant's top-1 probability against the
    reference's probability of that label, the largest per-label difference, or the
    difference of the two regression scores."""
    if task == "single_label":
        top = scores.argmax(axis=-1)
        rows = np.arange(len(top))
        return np.abs(scores[rows, top] - reference[rows, top])
    return np.abs(scores - reference).max(axis=-1)


def relevance(task: Task, labels: int) -> int | None:
    """The score column that ranks passages for /v1/rerank: a cross-encoder's one output
    (regression, or one sigmoid label), or a two-class model's second class (the positive
    one: "equivalent", "entailment", "relevant" by the usual convention). None when the
    head has no single relevance score."""
    if labels == 1 and task in ("regression", "multi_label"):
        return 0
    if labels == 2 and task == "single_label":
        return 1
    return None


def relevance_scores(task: Task, logits: np.ndarray, scores: np.ndarray, column: int, raw: bool) -> np.ndarray:
    """Per input, the score /v1/rerank ranks by: the relevance column's logit when `raw`,
    else a probability (a regression output through a sigmoid, as rerankers are trained
    with a binary cross-entropy on it; the class or label probability otherwise)."""
    if raw:
        return logits[:, column].astype(np.float64)
    return sigmoid(logits[:, column].astype(np.float64)) if task == "regression" else scores[:, column]


def mismatch(name: str, head: tuple[Task, list[str]], reference: str, reference_head: tuple[Task, list[str]]
             ) -> str | None:
    """Why `name`'s answers cannot be compared with `reference`'s, or None: agreement only
    means something between heads of the same task over the same labels. A head is
    (task, labels)."""
    if head == reference_head:
        return None
    return (f"{name!r} ({head[0]}, {len(head[1])} labels) cannot be compared with the reference "
            f"{reference!r} ({reference_head[0]}, {len(reference_head[1])} labels)")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 1.0 when both are constant and equal, 0.0 when one is constant."""
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def agreement(task: Task, scores: np.ndarray, reference: np.ndarray, threshold: float = THRESHOLD
              ) -> dict[str, float]:
    """Agreement of a variant with the reference over the same inputs. `agreement` is the
    headline figure every task has (1.0 = the same answers); regression adds `mae`."""
    if task == "regression":
        mine, theirs = scores[:, 0].astype(np.float64), reference[:, 0].astype(np.float64)
        return {"agreement": correlation(mine, theirs), "mae": float(np.abs(mine - theirs).mean())}
    return {"agreement": float(row_agreement(task, scores, reference, threshold).mean())}
