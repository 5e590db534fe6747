"""Token-embedding compression with a direction loss (Bałazy et al. 2021, "Direction is
what you need").

The word-embedding matrix E [V, H] (half of MiniLM's parameters) is replaced by latents
Z [V, k] looked up per token and a shared linear decoder D [k → H]: Embedding(V, k) +
Linear(k, H), a Gather and a MatMul in the graph. A linear autoencoder is fitted on the
rows of E with the paper's loss, which cares mostly about each row's direction:

    loss = 0.9975 · (1 − cos(Ê, E)) + 0.0025 · mean(|Ê − E| ^ α),  α annealed 1 → 0.1

It starts from the truncated SVD of E (the best linear fit by squared error) and moves
toward the directions. Without calibration text every row counts the same, as in the
paper. With `--calibration`, each row is weighted by 1 + how often its token occurs in
that text (normalised to mean 1), in the SVD start and in the loss, so the latent
capacity goes to the tokens real inputs use — an offline stand-in for the task signal
the paper gets from fine-tuning afterwards.

Budget: Z and D store V·k + k·H + H weights, so keeping `ratio` of V·H gives
k = ⌊(ratio·V·H − H) / (V + H)⌋.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from compressor.calibration import sample
from compressor.checkpoint import Classifier
from compressor.progress import progress_options
from variant.tokenization import TextInput

EPOCHS = 12  # the direction loss moves little past the PCA start; more epochs gain nothing measurable
BATCH = 256
LR = 1e-3
COS_WEIGHT, L1_WEIGHT = 0.9975, 0.0025
ALPHA_START, ALPHA_END = 1.0, 0.1
SAMPLE_TEXTS = 20000  # calibration texts counted for token frequencies


def latent_size(ratio: float, vocab: int, hidden: int) -> int:
    return max(1, int((ratio * vocab * hidden - hidden) / (vocab + hidden)))


def direction_loss(rebuilt: torch.Tensor, target: torch.Tensor, alpha: float,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    cos = nn.functional.cosine_similarity(rebuilt, target, dim=1, eps=1e-6)
    l1 = ((rebuilt - target).abs() + 1e-10).pow(alpha).mean(1)
    per_row = COS_WEIGHT * (1 - cos) + L1_WEIGHT * l1
    return (per_row if weight is None else per_row * weight).mean()


def token_weights(classifier: Classifier, texts: list[TextInput], vocab: int) -> torch.Tensor:
    counts = torch.zeros(vocab)
    for ids in classifier.tokenizer(texts, truncation=True, max_length=classifier.max_length)["input_ids"]:
        counts += torch.bincount(torch.tensor(ids), minlength=vocab)[:vocab].float()
    weight = 1 + counts
    return weight / weight.mean()


def fit_autoencoder(matrix: torch.Tensor, k: int, weight: torch.Tensor | None = None, epochs: int = EPOCHS,
                    seed: int = 0) -> tuple[torch.Tensor, nn.Linear]:
    """(latents [V, k], decoder Linear(k, H)) fitted to the rows of `matrix`."""
    order = torch.Generator().manual_seed(seed)  # a private generator: the global RNG stays as it was
    rows, hidden = matrix.shape
    # skip_init: both layers are set from the SVD below, so drawing random weights would
    # only disturb the global random state.
    encoder, decoder = nn.utils.skip_init(nn.Linear, hidden, k), nn.utils.skip_init(nn.Linear, k, hidden)
    w = torch.ones(rows) if weight is None else weight
    mean = (w[:, None] * matrix).sum(0) / w.sum()
    _, _, vh = torch.linalg.svd(w.sqrt()[:, None] * (matrix - mean), full_matrices=False)
    with torch.no_grad():  # start at PCA: the best linear autoencoder by squared error
        encoder.weight.copy_(vh[:k])
        encoder.bias.copy_(-(vh[:k] @ mean))
        decoder.weight.copy_(vh[:k].T)
        decoder.bias.copy_(mean)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=LR)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.5)
    for epoch in tqdm(range(epochs), desc="embed-ae", unit="epoch", **progress_options(), leave=False):
        alpha = ALPHA_START - (ALPHA_START - ALPHA_END) * epoch / max(1, epochs - 1)
        for batch in torch.randperm(rows, generator=order).split(BATCH):
            target = matrix[batch]
            loss = direction_loss(decoder(encoder(target)), target, alpha, None if weight is None else weight[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    decoder.zero_grad(set_to_none=True)
    with torch.no_grad():
        return encoder(matrix), decoder


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None) -> dict:
    model = classifier.model
    embedding = model.get_input_embeddings()
    matrix = embedding.weight.detach().float()
    vocab, hidden = matrix.shape
    k = latent_size(ratio, vocab, hidden)
    if ratio >= 1 or k * (vocab + hidden) + hidden >= vocab * hidden:
        return {"ratio": ratio, "latent": None, "note": "budget too large to save anything; embedding kept"}
    weight = token_weights(classifier, sample(calibration, SAMPLE_TEXTS, "embed-ae"), vocab) if calibration else None
    latents, decoder = fit_autoencoder(matrix, k, weight)
    assert latents.shape == (vocab, k) and decoder.weight.shape == (hidden, k), \
        f"embed-ae: latents {tuple(latents.shape)} and decoder {tuple(decoder.weight.shape)} " \
        f"for a {(vocab, hidden)} table at k = {k}"
    table = nn.Embedding(vocab, k, padding_idx=embedding.padding_idx)
    with torch.no_grad():
        table.weight.copy_(latents)
    model.set_input_embeddings(nn.Sequential(table, decoder))
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(decoder(latents), matrix, dim=1)
    return {"ratio": ratio, "latent": k, "mean_cosine": round(float(cos.mean()), 4), "epochs": EPOCHS,
            "weighting": "token frequency in calibration text" if calibration else "none"}
