"""Layer dropping: remove whole transformer layers and repair each gap in closed form.

Which layers. With a budget `ratio`, keep ⌊ratio·L + ½⌋ of the L layers (at least one),
chosen greedily: try removing each remaining layer (repaired as below), drop the one whose
removal changes the model's own predictions least — the mean KL divergence of its class
distribution from the original's — then measure the rest again on the model without it.
While choosing, the repairs are fitted on half the calibration batches and everything is
scored on the other half: a fit scored on its own data looks better than it is (worst at
the classification head, fitted on one vector per text). Or the user names the layers
(`--drop-layers 1,3`, counted from 0 as in `encoder.layer.N`).

Repair. Once layers a..b are gone, the next kept layer — or the classification head's
first Linear, which reads position 0 of the last layer's output — receives x = h_{a-1}
where it was trained on h_b. No gradient steps: least squares on calibration activations,
the truncated model feeding its own inputs forward, folded into weights the graph already
has, so the exported graph has fewer layers and no new op.

- `inputs`: fit an affine map x ↦ A·x + c to h_b by ridge least squares over calibration
  tokens and fold it into the next layer's Q, K and V (W' = W·A, b' = W·c + b). Each
  projection being linear in its input, this is exactly the least-squares refit of each
  projection on the new inputs. The residual branch still carries x: a full matrix has
  nothing to fold into there.
- `inputs+norm`: first refit, channel by channel, the γ and β of the LayerNorm that
  produces x (the last kept layer's output, or the embeddings'), so the residual branch
  carries the per-channel least-squares estimate of h_b; then the projections as above.
  Once its old reader is gone, that LayerNorm feeds nothing else.
- `none`: cut the layers, change nothing else.
- `auto` (default): per gap, whichever of the three brings the model closest to the
  original on held-out calibration text, so a gap where no refit helps is left alone.

No single refit wins everywhere. On MiniLM-L6 / SST-2 (README), `inputs` helps most near
the top (refitting the head alone takes dropping the last layer from 61% to 88% dev
accuracy); the norm refit is what makes layer 0 cheap to drop (held-out KL 0.14 → 0.065)
but does worse than `inputs` at layers 2-3. Keeping 3 of 6 layers, `auto` drops layer 0
with the norm refit and layers 3-4 with `inputs`: 84.2% dev accuracy, against 81.5%
(`inputs`), 83.0% (`inputs+norm`) and 75.3% (`none`), the teacher 89.3%. Tried, left out:
refitting the attention output projection to match the residual sum before LayerNorm
(worse everywhere), refitting the previous layer's FFN output projection so its LayerNorm
emits h_b (no better than `inputs` at 3 layers kept), and fitting the head's refit on
every token rather than position 0 (far worse: position 0 is unlike the rest).

Cost: each dropped layer takes its whole share of the encoder's weights and multiply-adds.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel

from compressor.calibration import batches, sample
from compressor.checkpoint import Classifier, model_task
from compressor.errors import InputError
from compressor.families import check_supported
from compressor.head_signals import head_divergence
from compressor.methods.layers import (
    embedding_norm,
    encoder_of,
    head_input,
    input_readers,
    layers_of,
)
from compressor.progress import progress_options
from compressor.recipe import DEFAULT_REPAIR, REPAIRS
from variant.heads import Task
from variant.tokenization import TextInput

SAMPLE = 512  # calibration texts; while choosing, every other batch fits the repairs and the rest score them
RIDGE = 1e-3  # relative to the inputs' mean second moment (variance, per channel): well posed on few texts


def kept_count(ratio: float, layers: int) -> int:
    return max(1, int(ratio * layers + 0.5))


def runs(dropped: list[int]) -> list[tuple[int, int]]:
    """Maximal stretches of consecutive dropped layers, (first, last), in order."""
    found: list[tuple[int, int]] = []
    for i in sorted(dropped):
        if found and found[-1][1] == i - 1:
            found[-1] = (found[-1][0], i)
        else:
            found.append((i, i))
    return found


def remove(model: PreTrainedModel, dropped: list[int]) -> None:
    encoder = encoder_of(model)
    encoder.layer = nn.ModuleList([l for i, l in enumerate(encoder.layer) if i not in dropped])
    model.config.num_hidden_layers = len(encoder.layer)  # DistilBERT maps it onto n_layers


@torch.no_grad()
def statistics(reference: PreTrainedModel, model: PreTrainedModel, data: list[dict], target: int, source: int,
               cls_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """AᵀA [H+1, H+1] and AᵀT [H+1, H] over calibration tokens, A = [x, 1] with x the
    truncated model's hidden state `source`, T the reference's hidden state `target`."""
    gram = cross = None
    for batch in data:
        x = model(**batch, output_hidden_states=True).hidden_states[source]
        t = reference(**batch, output_hidden_states=True).hidden_states[target]
        keep = batch["attention_mask"].bool()
        x, t = (x[:, 0], t[:, 0]) if cls_only else (x[keep], t[keep])
        a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        gram = a.T @ a if gram is None else gram + a.T @ a
        cross = a.T @ t.double() if cross is None else cross + a.T @ t.double()
    return gram, cross


def channel_fit(gram: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, the least-squares t_c ≈ s_c·x_c + c_c, read off the same statistics."""
    n = gram[-1, -1]
    mean_x, mean_t = gram[-1, :-1] / n, cross[-1] / n
    var = gram.diagonal()[:-1] / n - mean_x ** 2
    cov = cross[:-1].diagonal() / n - mean_x * mean_t
    scale = cov / (var + RIDGE * var.mean())
    return scale, mean_t - scale * mean_x


def affine_fit(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """M [H+1, H] with [x, 1]·M ≈ t by ridge least squares; the constant is not penalised."""
    penalty = torch.ones(len(gram), dtype=gram.dtype)
    penalty[-1] = 0
    ridge = RIDGE * gram.diagonal()[:-1].mean()
    return torch.linalg.solve(gram + ridge * torch.diag(penalty), cross)


def refit(how: str, norm: nn.LayerNorm | nn.Linear, readers: list[nn.Linear], gram: torch.Tensor,
          cross: torch.Tensor) -> None:
    """Fold one gap's repair into `norm` (what produces the gap's input: a LayerNorm, or
    ELECTRA's embedding projection) and `readers`."""
    if how == "none":
        return
    hidden = norm.weight.shape[0]
    assert gram.shape == (hidden + 1, hidden + 1) and cross.shape == (hidden + 1, hidden), \
        f"drop-layers: statistics {tuple(gram.shape)} and {tuple(cross.shape)} for a gap {hidden} wide"
    if how == "inputs+norm":
        scale, shift = channel_fit(gram, cross)
        assert scale.shape == shift.shape == norm.bias.shape, \
            f"drop-layers: {tuple(scale.shape)} scales for {tuple(norm.bias.shape)} output channels"
        # Output channel c: a LayerNorm's γ_c, or a Linear's row c, scales with it.
        norm.weight.copy_((norm.weight.double() * scale.view(-1, *[1] * (norm.weight.dim() - 1))).float())
        norm.bias.copy_((norm.bias.double() * scale + shift).float())
        # [x', 1] = [x, 1]·D: carry the statistics over to the refitted input.
        d = torch.diag(torch.cat([scale, torch.ones(1, dtype=scale.dtype)]))
        d[-1, :-1] = shift
        gram, cross = d.T @ gram @ d, d.T @ cross
    m = affine_fit(gram, cross)  # [H+1, H]
    for linear in readers:
        w = linear.weight.double()
        weight, bias = w @ m[:-1].T, linear.bias.double() + w @ m[-1]
        # copy_ broadcasts: a refit of the wrong shape would be written without a word.
        assert weight.shape == linear.weight.shape and bias.shape == linear.bias.shape, \
            f"drop-layers: refit {tuple(weight.shape)} in place of a {tuple(linear.weight.shape)} weight"
        linear.bias.copy_(bias.float())
        linear.weight.copy_(weight.float())


@torch.no_grad()
def repair(reference: PreTrainedModel, model: PreTrainedModel, dropped: list[int], data: list[dict],
           how: str | list[str], score: tuple[list[dict], torch.Tensor] | None = None) -> list[str]:
    """Remove `dropped` (original numbering) from `model`, a copy of `reference`, and refit
    across each gap, gap by gap from the input side, fitting on `data`. `how`: one repair for
    every gap, or one per gap; `auto` keeps, per gap, whichever of the others brings the
    model closest to the reference on `score` (batches and the reference's logits there).
    Returns the repair used per gap."""
    layers = layers_of(model)  # the original numbering: `dropped` counts in it
    remove(model, dropped)
    gaps = runs(dropped)
    used = []
    for (first, last), wanted in zip(gaps, [how] * len(gaps) if isinstance(how, str) else how):
        norm = embedding_norm(model) if first == 0 else layers[first - 1].output_norm
        at_head = last == len(layers) - 1
        readers = [head_input(model)] if at_head else input_readers(layers[last + 1])
        if wanted == "none":
            used.append(wanted)
            continue
        # Hidden state k is layer k's input (k = 0: the embeddings); the truncated model
        # has first - (layers dropped before this gap) layers in front of the gap.
        source = first - sum(i < first for i in dropped)
        gram, cross = statistics(reference, model, data, last + 1, source, at_head)
        if wanted == "auto":
            held_out, target = score
            touched = [p for m in [norm, *readers] for p in m.parameters()]
            saved = [p.clone() for p in touched]
            costs = {}
            for option in (r for r in REPAIRS if r != "auto"):
                refit(option, norm, readers, gram, cross)
                costs[option] = divergence(target, logits_of(model, held_out), model_task(reference))
                for p, old in zip(touched, saved):
                    p.copy_(old)
            wanted = min(costs, key=costs.get)
        refit(wanted, norm, readers, gram, cross)
        used.append(wanted)
    return used


@torch.no_grad()
def logits_of(model: PreTrainedModel, data: list[dict]) -> torch.Tensor:
    return torch.cat([model(**batch).logits.double() for batch in data])


def divergence(reference: torch.Tensor, other: torch.Tensor, task: Task) -> float:
    """Mean divergence per text between two models' logits (KL for a classifier;
    calibration.head_divergence)."""
    return float(head_divergence(reference, other, task).mean())


def choose(reference: PreTrainedModel, keep: int, fit: list[dict], score: tuple[list[dict], torch.Tensor],
           how: str) -> tuple[list[int], list[str], list[dict[str, float]]]:
    """Greedy: drop the layer that costs least, measure again, until `keep` are left.
    Returns the dropped layers, the repair used per gap, and per step every candidate's divergence."""
    layers = len(layers_of(reference))
    dropped: list[int] = []
    used: list[str] = []
    steps: list[dict[str, float]] = []
    progress = tqdm(total=sum(layers - k for k in range(layers - keep)), desc="drop-layers: sensitivity",
                    unit="trial", **progress_options(), leave=False)
    for _ in range(layers - keep):
        costs, repairs = {}, {}
        for i in (i for i in range(layers) if i not in dropped):
            trial = copy.deepcopy(reference)
            repairs[i] = repair(reference, trial, dropped + [i], fit, how, score)
            costs[i] = divergence(score[1], logits_of(trial, score[0]), model_task(reference))
            progress.update()
        best = min(costs, key=costs.get)
        dropped.append(best)
        used = repairs[best]
        steps.append({str(i): float(f"{c:.4g}") for i, c in costs.items()})
    progress.close()
    return sorted(dropped), used, steps


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None,
             layers: tuple[int, ...] | None = None, repair_with: str = DEFAULT_REPAIR) -> dict:
    check_supported(classifier.model.config, "drop-layers")
    texts = sample(calibration, SAMPLE, "drop-layers")
    model = classifier.model
    depth = len(layers_of(model))
    if layers is not None and (max(layers) >= depth or len(layers) >= depth):
        raise InputError(f"--drop-layers {','.join(map(str, layers))}: the model has layers 0-{depth - 1} "
                         "and at least one must stay")
    data = list(batches(classifier.tokenizer, texts, classifier.max_length))
    reference = copy.deepcopy(model)  # the model as it came: the target of every fit
    fit = data[::2]  # batches are sorted by length: alternate, so both halves span it
    held_out = data[1::2] or data
    score = (held_out, logits_of(reference, held_out))
    settings: dict = {"layers": depth, "calibration_texts": len(texts)}
    if layers is None:
        dropped, used, steps = choose(reference, kept_count(ratio, depth), fit, score, repair_with)
        settings.update(ratio=ratio, selection="greedy by KL on held-out calibration text", sensitivity=steps)
    else:
        dropped = list(layers)
        settings["selection"] = "given"
        used = (repair(reference, copy.deepcopy(reference), dropped, fit, repair_with, score)
                if repair_with == "auto" else [repair_with] * len(runs(dropped)))
    # Refit on the whole sample, each gap with the repair chosen on held-out text.
    repair(reference, model, dropped, data, used)
    target = logits_of(reference, data)
    plain = copy.deepcopy(reference)
    remove(plain, dropped)
    settings.update(
        dropped=dropped, kept=[i for i in range(depth) if i not in dropped], repair=repair_with,
        repairs=[{"layers": list(range(first, last + 1)), "repair": how} for (first, last), how in zip(runs(dropped), used)],
        # What the repair bought, on the texts it was fitted to.
        calibration_kl=float(f"{divergence(target, logits_of(model, data), classifier.task):.4g}"),
        calibration_kl_unrepaired=float(f"{divergence(target, logits_of(plain, data), classifier.task):.4g}"))
    return settings
