"""Low-rank factor pairs: the rank a budget buys, what a factorized Linear stores, and the
(scaled) truncated SVD every factorizing method (svd, svd-aware, asvd, fwsvd, allocation) uses."""

from __future__ import annotations

import torch


def rank_for(ratio: float, rows: int, cols: int) -> int:
    return max(1, int(ratio * rows * cols / (rows + cols)))


def stored(ratio: float, rows: int, cols: int) -> int:
    """Weights a [rows, cols] Linear keeps at budget `ratio`: the dense matrix when the
    budget is whole or when a factor pair that wide would save nothing."""
    if ratio >= 1:
        return rows * cols
    return min(rows * cols, rank_for(ratio, rows, cols) * (rows + cols))


def factorize(weight: torch.Tensor, rank: int, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(down [rank, in], up [out, rank]); with `scale`, the best rank-`rank` fit of W·S."""
    w = weight.double()
    if scale is not None:
        scale = scale.double()
        w = w * scale if scale.dim() == 1 else w @ scale
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    down = root[:, None] * vh[:rank]
    if scale is not None:
        down = down / scale if scale.dim() == 1 else torch.linalg.solve_triangular(scale, down, upper=False, left=False)
    return down.float(), (u[:, :rank] * root).float()
