"""Weight-space autoencoders (Banaei et al., EACL 2023, "Revisiting Offline Compression").

The rows of a weight matrix are the samples. An autoencoder maps each row to a latent
vector z of size k; only the latents, the decoder and one norm per row are kept:

    row_i ≈ norm_i · d(z_i) / ‖d(z_i)‖

d is the paper's non-linear decoder (k → 2k → 4k → width, LeakyReLU between layers,
Tanh at the end) or a single Linear. Training minimises the paper's loss on the rescaled
rows, 0.9091·(1 − cos) + 0.0909·RMSE, with the norms trained too (training settings
below); the encoder
(width → 8k → 4k → k) only produces the latents and is dropped afterwards.

Which rows: a matrix gives its samples along its longer side (1536 rows of 384 for both
feed-forward matrices of MiniLM), which is the cheaper way round for the budget. Two
sharing modes, as in the paper:
- separated: one autoencoder per matrix;
- concatenated (`-shared`): one autoencoder per module type (all layers' queries, all
  keys, ...), the decoder shared by every layer, so its cost is paid once.

Budget: latents + decoder + norms = `ratio` of the weights compressed (per matrix, or per
module type when shared); k is the largest that fits, and a matrix where even k = 1 does
not fit stays dense.

At inference: the linear decoder is a factorization, W = diag(c)·[Z 1]·[Dᵀ; b], exported
as two Linears (the decoder side shared across layers when concatenated). The non-linear
decoder stays in the graph (GeneratedLinear): small file, dense weights after load.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from compressor.checkpoint import Classifier
from compressor.methods.linears import (
    FactorPair,
    GeneratedLinear,
    encoder_linears,
    replace_module,
)
from compressor.progress import progress_options
from variant.tokenization import TextInput

DECODER_WIDTHS = (2, 4)  # hidden layers of the non-linear decoder, in multiples of k (paper default)
ENCODER_WIDTHS = (8, 4)
# The paper trains 30 epochs in batches of 16 at lr 1e-3. On MiniLM's matrices that stops
# far short of a fit (mean row cosine 0.59 on a query matrix at ratio 0.5); batches of 128
# at 5e-3 for 100 epochs reach what the paper's settings reach in 100 epochs (0.73), five
# times faster. A shared autoencoder sees six layers' rows per epoch, so its epochs are
# capped by a step budget that keeps every method within minutes on two cores. The
# schedule (×0.8 ten times over the run) and the best-epoch choice follow the paper.
EPOCHS = 100
MAX_STEPS = 1500
BATCH = 128
LR = 5e-3
LR_DECAYS, LR_GAMMA = 10, 0.8
COS_WEIGHT, RMSE_WEIGHT = 0.9091, 0.0909


def decoder_size(k: int, width: int, linear: bool) -> int:
    sizes = [k, width] if linear else [k, *(m * k for m in DECODER_WIDTHS), width]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def stored(k: int, rows: int, width: int, linear: bool) -> int:
    """Latents, norms and decoder for `rows` samples of `width`."""
    return rows * (k + 1) + decoder_size(k, width, linear)


def latent_size(ratio: float, rows: int, width: int, linear: bool) -> int:
    """The largest k whose storage fits `ratio` of rows·width; 0 when none saves anything."""
    budget = ratio * rows * width
    k = 0
    while k < width and stored(k + 1, rows, width, linear) <= budget:
        k += 1
    return k


def layers(sizes: list[int], last: nn.Module | None) -> nn.Sequential:
    """Linears with LeakyReLU after each; `last` replaces the final activation."""
    modules: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        modules += [nn.Linear(a, b), nn.LeakyReLU()]
    if last is not None:
        modules[-1] = last
    return nn.Sequential(*modules)


def decoder(k: int, width: int, linear: bool) -> nn.Module:
    return nn.Linear(k, width) if linear else layers([k, *(m * k for m in DECODER_WIDTHS), width], nn.Tanh())


def encoder(width: int, k: int, linear: bool) -> nn.Module:
    return nn.Linear(width, k) if linear else layers([width, *(m * k for m in ENCODER_WIDTHS), k], None)


def rescaled(rows: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    return rows * (norms / rows.norm(dim=1).clamp_min(1e-12)).unsqueeze(1)


def loss_of(rebuilt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    cos = nn.functional.cosine_similarity(rebuilt, target, dim=1, eps=1e-8).mean()
    rmse = (rebuilt - target).pow(2).mean().sqrt()
    return COS_WEIGHT * (1 - cos) + RMSE_WEIGHT * rmse


@dataclass
class Fit:
    latents: torch.Tensor  # [rows, k]
    norms: torch.Tensor  # [rows]
    decoder: nn.Module
    mean_cosine: float
    epochs: int


def fit(rows: torch.Tensor, k: int, linear: bool, epochs: int | None = None, seed: int = 0) -> Fit:
    """Train an autoencoder on the rows of a [rows, width] matrix; keep the best epoch."""
    epochs = epochs or min(EPOCHS, max(10, MAX_STEPS // -(-len(rows) // BATCH)))
    generator = torch.Generator().manual_seed(seed)
    rows = rows.float()
    with torch.random.fork_rng(devices=[]):  # initialise from `seed`, leave the global RNG as it was
        torch.manual_seed(seed)
        enc, dec = encoder(rows.shape[1], k, linear), decoder(k, rows.shape[1], linear)
    if linear:  # start the linear pair at PCA, the best linear fit by squared error
        _, _, vh = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)
        with torch.no_grad():
            enc.weight.copy_(vh[:k])
            enc.bias.copy_(-(vh[:k] @ rows.mean(0)))
            dec.weight.copy_(vh[:k].T)
            dec.bias.copy_(rows.mean(0))
    norms = nn.Parameter(rows.norm(dim=1).clone())
    optimizer = torch.optim.Adam([*enc.parameters(), *dec.parameters(), norms], lr=LR)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, max(1, epochs // LR_DECAYS), LR_GAMMA)
    best, best_loss = None, float("inf")
    for _ in tqdm(range(epochs), desc="ae", unit="epoch", **progress_options(), leave=False):
        for batch in torch.randperm(len(rows), generator=generator).split(BATCH):
            loss = loss_of(rescaled(dec(enc(rows[batch])), norms[batch]), rows[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        with torch.no_grad():
            epoch_loss = float(loss_of(rescaled(dec(enc(rows)), norms), rows))
        if epoch_loss < best_loss:
            best_loss, best = epoch_loss, (copy.deepcopy(enc), copy.deepcopy(dec), norms.detach().clone())
    enc, dec, kept_norms = best
    with torch.no_grad():
        latents = enc(rows)
        cos = nn.functional.cosine_similarity(rescaled(dec(latents), kept_norms), rows, dim=1).mean()
    return Fit(latents, kept_norms, dec, float(cos), epochs)


class RowsFromLatents(nn.Module):
    """The generator of one matrix: its latents and norms, and the (maybe shared) decoder."""

    def __init__(self, latents: torch.Tensor, norms: torch.Tensor, decoder: nn.Module, transposed: bool) -> None:
        super().__init__()
        self.latents = nn.Parameter(latents.detach().clone())
        self.norms = nn.Parameter(norms.detach().clone())
        self.decoder = decoder
        self.transposed = transposed

    def forward(self) -> torch.Tensor:
        rows = rescaled(self.decoder(self.latents), self.norms)
        return rows.T if self.transposed else rows


def linear_pair(fitted: Fit, rows: slice, shared: nn.Linear, transposed: bool, bias: torch.Tensor | None) -> FactorPair:
    """The linear decoder as two Linears: W = diag(c)·[Z 1]·B, with B = [Dᵀ; b] in `shared`."""
    with torch.no_grad():
        z = fitted.latents[rows]
        built = fitted.decoder(z)
        scale = (fitted.norms[rows] / built.norm(dim=1).clamp_min(1e-12)).unsqueeze(1)
        codes = torch.cat([z, torch.ones(len(z), 1)], 1) * scale  # [rows, k + 1]
    inner = shared.in_features if transposed else shared.out_features  # k + 1, between the two Linears
    assert codes.shape == (rows.stop - rows.start, inner), \
        f"ae: codes {tuple(codes.shape)} for rows {rows.start}:{rows.stop}, the shared side {inner} wide"
    own = nn.Linear(*((codes.shape[0], codes.shape[1]) if transposed else (codes.shape[1], codes.shape[0])),
                    bias=bias is not None and not transposed)
    with torch.no_grad():
        own.weight.copy_(codes.T if transposed else codes)
        if own.bias is not None:
            own.bias.copy_(bias)
    if transposed:  # y = Bᵀ·(codesᵀ·x): the shared side comes second and carries the bias
        return FactorPair(own, shared if bias is None else SharedThenBias(shared, bias))
    return FactorPair(shared, own)


class SharedThenBias(nn.Module):
    """A shared bias-free Linear plus this layer's own bias."""

    def __init__(self, shared: nn.Linear, bias: torch.Tensor) -> None:
        super().__init__()
        self.shared = shared
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x) + self.bias


def shared_linear(fitted: Fit, transposed: bool) -> nn.Linear:
    """B = [Dᵀ; b] as a bias-free Linear: k + 1 → width (transposed) or width → k + 1."""
    dec = fitted.decoder
    b = torch.cat([dec.weight.T, dec.bias[None]], 0).detach()  # [k + 1, width]
    linear = nn.Linear(*((b.shape[0], b.shape[1]) if transposed else (b.shape[1], b.shape[0])), bias=False)
    with torch.no_grad():
        linear.weight.copy_(b.T if transposed else b)
    return linear


def orientation(shapes: list[tuple[int, int]]) -> bool | None:
    """Whether the rows are the matrices' columns (transposed): the samples must all have
    one width, and the longer side gives more of them. None: no common width."""
    outs, ins = {o for o, _ in shapes}, {i for _, i in shapes}
    if len(ins) == 1 and (len(outs) > 1 or sum(o for o, _ in shapes) >= sum(i for _, i in shapes)):
        return False
    if len(outs) == 1:
        return True
    return None


def module_type(name: str) -> str:
    """`bert.encoder.layer.3.attention.self.query` → `bert.encoder.layer.*.attention.self.query`."""
    return re.sub(r"\.\d+\.", ".*.", name)


def groups(linears: dict[str, nn.Linear], shared: bool) -> dict[str, list[str]]:
    if not shared:
        return {name: [name] for name in linears}
    grouped: dict[str, list[str]] = {}
    for name in linears:
        grouped.setdefault(module_type(name), []).append(name)
    return grouped


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None, *,
             shared: bool, linear: bool) -> dict:
    model = classifier.model
    linears = encoder_linears(model)
    latents, cosines, epochs, kept_dense = [], [], [], []
    for key, names in tqdm(groups(linears, shared).items(), desc="ae groups", **progress_options(), leave=False):
        weights = [linears[n].weight.detach() for n in names]
        transposed = orientation([tuple(w.shape) for w in weights])
        if transposed is None:  # e.g. pruned differently per layer on both sides
            kept_dense += names
            continue
        rows = torch.cat([w.T if transposed else w for w in weights])
        k = latent_size(ratio, *rows.shape, linear)
        if k == 0:
            kept_dense += names
            continue
        fitted = fit(rows, k, linear)
        latents.append(k)
        cosines.append(fitted.mean_cosine)
        epochs.append(fitted.epochs)
        side = shared_linear(fitted, transposed) if linear else None
        start = 0
        for name, weight in zip(names, weights):
            span = slice(start, start + (weight.shape[1] if transposed else weight.shape[0]))
            start = span.stop
            # The span must be exactly this matrix's rows among the group's: a shifted one
            # would rebuild a neighbour's rows into this layer.
            assert rows[span].shape == (weight.T if transposed else weight).shape, \
                f"ae: rows {span.start}:{span.stop} of {len(rows)} for {name}, a {tuple(weight.shape)} weight"
            if linear:
                new = linear_pair(fitted, span, side, transposed, linears[name].bias)
            else:
                new = GeneratedLinear(RowsFromLatents(fitted.latents[span], fitted.norms[span], fitted.decoder,
                                                      transposed), linears[name])
            replace_module(model, name, new)
    return {"ratio": ratio, "sharing": "concatenated" if shared else "separated",
            "decoder": "linear" if linear else "non-linear", "latents": sorted(set(latents)),
            "mean_cosine": round(sum(cosines) / len(cosines), 4) if cosines else None,
            "dense_layers": len(kept_dense), "epochs": sorted(set(epochs))}
