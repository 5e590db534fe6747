"""Signals from unlabeled calibration text: what the data-aware methods look at.

- `input_statistics`: per encoder Linear, XᵀX and Σ|x| of its inputs over real (unpadded)
  tokens — SVD-LLM's whitening and ASVD's scaling.

Calibration inputs are texts or `(text, text_pair)` tuples; a pair is tokenized as one
input with its second segment (token_type_ids of 1), exactly as the service encodes it.
- `fisher_diagonal`: per encoder Linear, the squared gradient of the loss summed over
  calibration texts, one text at a time (the empirical Fisher's diagonal). No labels: the
  loss is taken against the original model's own answer, as its task reads it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from compressor.head_signals import self_predicted_loss
from compressor.progress import progress_options
from compressor.recipe import missing_calibration
from variant.heads import Task
from variant.tokenization import TextInput

SAMPLE = 1024  # texts drawn from the calibration file; SST-2 sentences give ~20k tokens
FISHER_SAMPLE = 256  # texts for gradient signals, one backward pass each
BATCH = 32


@dataclass
class InputStats:
    gram: torch.Tensor  # XᵀX [in, in], float64
    abs_sum: torch.Tensor  # Σ|x| per input channel [in], float64
    tokens: int


def sample(texts: list[TextInput] | None, size: int, method: str, seed: int = 0) -> list[TextInput]:
    if not texts:
        raise missing_calibration(method)
    if len(texts) <= size:
        return list(texts)
    return random.Random(seed).sample(texts, size)


def characters(text: TextInput) -> int:
    return len(text) if isinstance(text, str) else sum(map(len, text))


def batches(tokenizer: PreTrainedTokenizerFast, texts: list[TextInput], max_length: int,
            size: int = BATCH) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches; a `(text, text_pair)` input is encoded as a pair, as the service does."""
    ordered = sorted(texts, key=characters)  # similar lengths together: little padding
    for start in range(0, len(ordered), size):
        yield tokenizer(ordered[start:start + size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")


@torch.no_grad()
def input_statistics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, texts: list[TextInput],
                     linears: dict[str, nn.Linear], max_length: int) -> dict[str, InputStats]:
    stats = {name: InputStats(torch.zeros(l.in_features, l.in_features, dtype=torch.float64),
                              torch.zeros(l.in_features, dtype=torch.float64), 0) for name, l in linears.items()}
    keep: dict[str, torch.Tensor] = {}  # the current batch's token mask, shared with the hooks

    def hook(name: str):
        def record(_module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])
            # Token inputs lose their padding. DeBERTa-v2 also runs its query and key over the
            # relative-position embeddings (no batch, no padding): every such row counts.
            x = (x[keep["mask"].reshape(-1)] if args[0].shape[:-1] == keep["mask"].shape else x).double()
            s = stats[name]
            s.gram += x.T @ x
            s.abs_sum += x.abs().sum(0)
            s.tokens += x.shape[0]
        return record

    handles = [linear.register_forward_hook(hook(name)) for name, linear in linears.items()]
    try:
        for batch in tqdm(list(batches(tokenizer, texts, max_length)), desc="calibration", unit="batch",
                          **progress_options(), leave=False):
            keep["mask"] = batch["attention_mask"].bool()
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def fisher_diagonal(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, texts: list[TextInput],
                    params: dict[str, nn.Parameter], max_length: int, task: Task) -> dict[str, torch.Tensor]:
    """Σ over texts of (∂ loss / ∂ param)², the loss taken against the model's own answer."""
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for text in tqdm(texts, desc="fisher", unit="text", **progress_options(), leave=False):
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            grads = torch.autograd.grad(self_predicted_loss(model(**batch).logits, task), list(params.values()))
            for name, grad in zip(params, grads):
                fisher[name] += grad.detach() ** 2
    finally:
        model.train(was_training)
    return fisher
