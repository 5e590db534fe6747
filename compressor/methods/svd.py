"""Truncated SVD: every encoder Linear W [out, in] becomes two Linears of rank r.

W ≈ (U_r √S_r)(√S_r V_rᵀ). The singular values are split evenly between the two factors
so both have the same scale, which keeps them friendly to int8 quantization later.
Rank from the budget: a rank-r pair stores r·(in + out) weights, so keeping `ratio` of
the in·out weights gives r = ⌊ratio · in · out / (in + out)⌋. Biases stay as they are.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from compressor.methods.linears import encoder_linears, replace_module, two_linears


def rank_for(ratio: float, rows: int, cols: int) -> int:
    return max(1, int(ratio * rows * cols / (rows + cols)))


def factorize(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(down [rank, in], up [out, rank]) with up @ down the best rank-`rank` approximation."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).float(), (u[:, :rank] * root).float()


def compress(model: PreTrainedModel, ratio: float, calibration: list[str] | None = None) -> dict:
    ranks = {}
    for name, linear in encoder_linears(model).items():
        rows, cols = linear.weight.shape
        rank = rank_for(ratio, rows, cols)
        if rank * (rows + cols) >= rows * cols:  # a factorization this wide saves nothing
            continue
        down, up = factorize(linear.weight.detach(), rank)
        replace_module(model, name, two_linears(down, up, linear.bias.detach() if linear.bias is not None else None))
        ranks[name] = rank
    return {"ratio": ratio, "ranks": sorted(set(ranks.values())), "factorized_layers": len(ranks)}
