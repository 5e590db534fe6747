"""Nearest Kronecker product (Van Loan & Pitsianis 1993): W [n, m] ≈ Σ_{i<r} A_i ⊗ B_i.

With n = n1·n2 and m = m1·m2, rearranging W so that every n2×m2 block becomes one row
turns the sum of r Kronecker products into a rank-r matrix, so the truncated SVD of the
rearranged matrix gives the best A_i [n1, m1] and B_i [n2, m2] in the Frobenius norm.
The factor shapes are the divisors nearest √n and √m (16·24 for 384, 32·48 for 1536).

Budget: r terms store r·(n1·m1 + n2·m2) weights, so r = ⌊ratio·n·m / (n1·m1 + n2·m2)⌋.

At inference the product is rebuilt in the graph (GeneratedLinear): applying the sum
term by term would cost r·(m1 + n2)/(n2·m1) times the dense layer — about 9× dense for
a 384×384 matrix at ratio 0.5 (r = 88) — so the factors only shrink the file.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compressor.checkpoint import Classifier
from compressor.methods.linears import GeneratedLinear, encoder_linears, replace_module
from variant.tokenization import TextInput


def split(size: int) -> tuple[int, int]:
    """size = a·b with a the divisor nearest √size (the smaller one on a tie)."""
    root = math.sqrt(size)
    a = min((d for d in range(1, size + 1) if size % d == 0), key=lambda d: (abs(d - root), d))
    return a, size // a


def terms_for(ratio: float, n: int, m: int) -> int:
    (n1, n2), (m1, m2) = split(n), split(m)
    return min(n1 * m1, n2 * m2, int(ratio * n * m / (n1 * m1 + n2 * m2)))


def nearest_kronecker(weight: torch.Tensor, terms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [r, n1, m1], B [r, n2, m2]) with Σ A_i ⊗ B_i the best r-term fit of `weight`."""
    (n1, n2), (m1, m2) = split(weight.shape[0]), split(weight.shape[1])
    arranged = weight.double().reshape(n1, n2, m1, m2).permute(0, 2, 1, 3).reshape(n1 * m1, n2 * m2)
    u, s, vh = torch.linalg.svd(arranged, full_matrices=False)
    root = s[:terms].sqrt()
    a = (u[:, :terms] * root).T.reshape(terms, n1, m1)
    b = (root[:, None] * vh[:terms]).reshape(terms, n2, m2)
    return a.float(), b.float()


class KroneckerSum(nn.Module):
    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)

    def forward(self) -> torch.Tensor:
        _, n1, m1 = self.a.shape
        _, n2, m2 = self.b.shape
        return torch.einsum("rab,rcd->acbd", self.a, self.b).reshape(n1 * n2, m1 * m2)


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None) -> dict:
    terms, dense = [], 0
    for name, linear in encoder_linears(classifier.model).items():
        n, m = linear.weight.shape
        r = terms_for(ratio, n, m)
        (n1, n2), (m1, m2) = split(n), split(m)
        if r < 1 or r * (n1 * m1 + n2 * m2) >= n * m:  # nothing to save (a prime size, or a generous budget)
            dense += 1
            continue
        a, b = nearest_kronecker(linear.weight.detach(), r)
        replace_module(classifier.model, name, GeneratedLinear(KroneckerSum(a, b), linear))
        terms.append(r)
    return {"ratio": ratio, "terms": sorted(set(terms)), "dense_layers": dense}
