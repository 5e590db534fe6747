"""Tucker decomposition with factors shared across layers, after Ren et al. (ICLR 2022,
"Exploring Extreme Parameter Compression for Pre-trained Language Models").

Every encoder matrix is cut into H×H blocks (H = hidden size: 4 per layer for Q, K, V and
the attention output, 4 + 4 for the feed-forward pair: 12 per layer), and the N blocks are
stacked into an N×H×H tensor. Its Tucker decomposition with full rank on the block mode
and rank r on both matrix modes gives each block as

    W_i ≈ U · C_i · Vᵀ,   U, V [H, r] shared by all N blocks,   C_i [r, r] its own

fitted by higher-order orthogonal iteration (HOSVD start, then alternating U and V).
Budget: N·r² + 2·H·r = `ratio` of N·H². Matrices whose sides are not multiples of H (for
example after `prune`) stay dense.

At inference the blocks are rebuilt in the graph (GeneratedLinear): the file holds the
shared bases and the cores, and ONNX Runtime rebuilds dense weights at load. The paper
recovers accuracy by distillation afterwards; slimserve does none, so expect a loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compressor.checkpoint import Classifier
from compressor.methods.linears import GeneratedLinear, encoder_linears, replace_module
from variant.tokenization import TextInput

ITERATIONS = 5  # alternating updates after the HOSVD start; the fit barely moves after that


def rank_for(ratio: float, blocks: int, hidden: int) -> int:
    """The largest r with blocks·r² + 2·hidden·r ≤ ratio·blocks·hidden²."""
    budget = ratio * blocks * hidden * hidden
    r = int((-2 * hidden + math.sqrt(4 * hidden * hidden + 4 * blocks * budget)) / (2 * blocks))
    return min(r, hidden)


def blocks_of(weight: torch.Tensor, hidden: int) -> list[torch.Tensor]:
    rows, cols = weight.shape
    return [weight[i:i + hidden, j:j + hidden] for i in range(0, rows, hidden) for j in range(0, cols, hidden)]


def top_vectors(gram: torch.Tensor, r: int) -> torch.Tensor:
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    return vectors[:, -r:].flip(1)


def shared_tucker(blocks: torch.Tensor, r: int, iterations: int = ITERATIONS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U [H, r], Vᵀ [r, H], cores [N, r, r]) for blocks [N, H, H]."""
    w = blocks.double()
    u = top_vectors(torch.einsum("nij,nkj->ik", w, w), r)
    v = top_vectors(torch.einsum("nji,njk->ik", w, w), r)
    for _ in range(iterations):
        projected = w @ v  # [N, H, r]
        u = top_vectors(torch.einsum("nir,nkr->ik", projected, projected), r)
        projected = w.transpose(1, 2) @ u
        v = top_vectors(torch.einsum("nir,nkr->ik", projected, projected), r)
    cores = u.T @ w @ v
    return u.float(), v.T.contiguous().float(), cores.float()


class Bases(nn.Module):
    """U and Vᵀ, held once and referenced by every generated matrix."""

    def __init__(self, u: torch.Tensor, vt: torch.Tensor) -> None:
        super().__init__()
        self.u, self.vt = nn.Parameter(u), nn.Parameter(vt)


class TuckerBlocks(nn.Module):
    """One matrix as a grid of U·C_i·Vᵀ blocks."""

    def __init__(self, bases: Bases, cores: torch.Tensor, grid: tuple[int, int]) -> None:
        super().__init__()
        self.bases, self.cores, self.grid = bases, nn.Parameter(cores), grid

    def forward(self) -> torch.Tensor:
        blocks = self.bases.u @ self.cores @ self.bases.vt  # [n, H, H]
        rows, cols = self.grid
        hidden = blocks.shape[-1]
        return blocks.reshape(rows, cols, hidden, hidden).transpose(1, 2).reshape(rows * hidden, cols * hidden)


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None) -> dict:
    hidden = classifier.model.config.hidden_size
    linears = encoder_linears(classifier.model)
    fitting = {n: l for n, l in linears.items() if all(side % hidden == 0 for side in l.weight.shape)}
    if not fitting:
        return {"ratio": ratio, "rank": None, "blocks": 0, "dense_layers": len(linears)}
    blocks = [b for l in fitting.values() for b in blocks_of(l.weight.detach(), hidden)]
    r = rank_for(ratio, len(blocks), hidden)
    if r >= hidden or r < 1:
        return {"ratio": ratio, "rank": None, "blocks": len(blocks), "dense_layers": len(linears),
                "note": "budget too large to save anything; matrices kept"}
    u, vt, cores = shared_tucker(torch.stack(blocks), r)
    bases = Bases(u, vt)
    start = 0
    for name, linear in fitting.items():
        rows, cols = (side // hidden for side in linear.weight.shape)
        own = cores[start:start + rows * cols]
        start += rows * cols
        replace_module(classifier.model, name, GeneratedLinear(TuckerBlocks(bases, own, (rows, cols)), linear))
    return {"ratio": ratio, "rank": r, "blocks": len(blocks), "dense_layers": len(linears) - len(fitting),
            "iterations": ITERATIONS}
