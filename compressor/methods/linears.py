"""Finding and replacing the encoder's Linear layers, the part every factorization shares.

"Encoder Linear" means every nn.Linear of the transformer body (attention projections and
feed-forward layers). The pooler and the classification head stay dense: they are small,
and the task signal runs through them. The embeddings (an `embed-ae` decoder included) and
the factors of an already factorized layer (and the decoder inside a generated weight) are
not encoder Linears either.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel


class FactorPair(nn.Sequential):
    """Two Linears that replaced one: marked so no method factorizes a factor again."""


class GeneratedLinear(nn.Module):
    """A Linear whose weight `generate()` rebuilds from compact stored factors on each call
    (autoencoder latents and decoder, Kronecker or Tucker factors).

    The ONNX file keeps only the factors and the small generating graph. Every input of that
    graph is a constant, so ONNX Runtime folds it into a dense weight once, when it loads the
    session: a small file, but dense memory and dense compute at run time."""

    def __init__(self, generate: nn.Module, replaced: nn.Linear) -> None:
        super().__init__()
        with torch.no_grad():
            shape = tuple(generate().shape)
        assert shape == tuple(replaced.weight.shape), \
            f"a generated {shape} weight in place of a {tuple(replaced.weight.shape)} Linear"
        self.generate = generate
        self.bias = None if replaced.bias is None else nn.Parameter(replaced.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.generate(), self.bias)


def encoder_linears(model: PreTrainedModel) -> dict[str, nn.Linear]:
    """Qualified name → Linear for every Linear of the transformer body."""
    prefix = model.base_model_prefix
    inside = {id(m) for holder in model.modules() if isinstance(holder, (FactorPair, GeneratedLinear))
              for m in holder.modules()}
    return {
        f"{prefix}.{name}": module
        for name, module in model.base_model.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in inside
        and not name.startswith(("pooler", "embeddings"))
    }


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)


def two_linears(down: torch.Tensor, up: torch.Tensor, replaced: nn.Linear) -> FactorPair:
    """x → up @ (down @ x) + bias as two Linears, which export as two MatMuls, in place of
    `replaced` (whose bias the second takes). down: [rank, in], up: [out, rank]."""
    rank, (out, inputs) = down.shape[0], replaced.weight.shape
    assert down.shape == (rank, inputs) and up.shape == (out, rank), \
        f"factors {tuple(down.shape)} and {tuple(up.shape)} in place of a {(out, inputs)} Linear"
    first = nn.Linear(inputs, rank, bias=False)
    second = nn.Linear(rank, out, bias=replaced.bias is not None)
    with torch.no_grad():
        first.weight.copy_(down)
        second.weight.copy_(up)
        if replaced.bias is not None:
            second.bias.copy_(replaced.bias)
    return FactorPair(first, second)
