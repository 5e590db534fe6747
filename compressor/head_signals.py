"""The signals the compression methods take from a classifier's head, in torch: one row per
task of variant/heads.py (a test keeps the two tables' tasks equal).

- `self_loss`: a task signal without labels, whose gradients give the empirical Fisher
  (fwsvd, prune): the loss against the model's own answer, its top-1 or its on/off label
  decisions. A regression head's own answer is a zero-loss point, so it gives the output
  itself: its squared gradient is the Fisher diagonal of a Gaussian likelihood.
- `divergence`: per input, how far `other` logits answer from `reference` logits
  (drop-layers, allocation): KL between the class distributions, the sum of per-label
  Bernoulli KLs, or the squared difference of the scores. [inputs], ≥ 0 up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from variant.heads import Task


def categorical_kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    ref, oth = reference.log_softmax(-1), other.log_softmax(-1)
    return (ref.exp() * (ref - oth)).sum(-1)


def bernoulli_kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    p_ref = torch.sigmoid(reference)
    on = p_ref * (nn.functional.logsigmoid(reference) - nn.functional.logsigmoid(other))
    off = (1 - p_ref) * (nn.functional.logsigmoid(-reference) - nn.functional.logsigmoid(-other))
    return (on + off).sum(-1)


@dataclass(frozen=True)
class HeadSignal:
    self_loss: Callable[[torch.Tensor], torch.Tensor]  # logits → a scalar loss
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # reference, other logits → [inputs]


SIGNALS: dict[str, HeadSignal] = {
    "single_label": HeadSignal(lambda logits: nn.functional.cross_entropy(logits, logits.argmax(-1).detach()),
                               categorical_kl),
    "multi_label": HeadSignal(lambda logits: nn.functional.binary_cross_entropy_with_logits(
        logits, (logits >= 0).float().detach(), reduction="sum"), bernoulli_kl),
    "regression": HeadSignal(lambda logits: logits.sum(), lambda ref, other: ((ref - other) ** 2).sum(-1)),
}


def self_predicted_loss(logits: torch.Tensor, task: Task) -> torch.Tensor:
    return SIGNALS[task].self_loss(logits)


def head_divergence(reference: torch.Tensor, other: torch.Tensor, task: Task) -> torch.Tensor:
    return SIGNALS[task].divergence(reference, other)
