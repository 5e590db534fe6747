"""Retraining-free structured pruning, after Kwon et al. 2022 ("A Fast Post-Training
Pruning Framework for Transformers").

1. Importance: a mask variable multiplies every attention head's output and every FFN
   neuron's activation; the squared gradients of the loss w.r.t. those masks, summed over
   calibration mini-batches of 16 texts (as the authors do), stand in for the diagonal
   Fisher information of each unit. No labels: the loss is the cross-entropy against the
   original model's own top-1.
2. Search: rank the heads and the neurons globally and pick how many heads to keep so that,
   with the rest of the budget filled by the best neurons, the kept importance is largest.
   Every layer keeps at least one head and one neuron, so no sublayer vanishes.
3. Rearrangement: inside each layer, with the number kept fixed, greedily swap which units
   are pruned so that the summed mini-batch gradients of the pruned set stay small — the
   Fisher cross-terms the diagonal ignored.
4. Rescaling: layer by layer, solve a least-squares problem for one scale per kept head and
   per kept neuron so that the pruned layer's output (before LayerNorm) matches the original
   layer's output on calibration text, the pruned model feeding its own inputs forward.
5. Surgery: fold the scales into the output projections and physically remove the pruned
   heads (layers.prune_heads) and neurons, so the exported graph is smaller and faster.

The budget (`ratio`) is the kept fraction of the prunable weights — a head owns 4·H·d of
them (its slices of Q, K, V and the output projection), a neuron 2·H — which is also the
kept fraction of their multiply-adds per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

from compressor.calibration import batches, sample
from compressor.checkpoint import Classifier
from compressor.errors import InputError
from compressor.families import check_supported
from compressor.head_signals import self_predicted_loss
from compressor.methods.layers import layers_of, prune_heads
from compressor.methods.linears import replace_module
from compressor.progress import progress_options
from variant.tokenization import TextInput

SAMPLE = 512  # calibration texts for gradients and rescaling
GRAD_BATCH = 16  # texts per mini-batch gradient: the rearrangement's sample vectors
SCALE_LIMIT = 10.0  # a least-squares scale beyond this means an ill-posed layer: stop rescaling
RIDGE = 1e-3  # pull toward scale 1 (the unpruned value), relative to the mean diagonal of AᵀA


@contextmanager
def masked(model: PreTrainedModel, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> Iterator[None]:
    """Multiply each head's context and each neuron's activation by its mask value."""
    handles = []
    for i, b in enumerate(layers_of(model)):
        def heads(_m, args, i=i, b=b):
            x = args[0]
            return (x.view(*x.shape[:-1], b.heads, b.head_size).mul(head_mask[i][:, None]).view(x.shape),)

        def neurons(_m, args, i=i):
            return (args[0] * neuron_mask[i],)

        handles += [b.attention_out.register_forward_pre_hook(heads), b.ffn_out.register_forward_pre_hook(neurons)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def mask_gradients(classifier: Classifier, texts: list[TextInput]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mini-batch gradients of the self-predicted loss w.r.t. the masks: [batches, L, H], [batches, L, F]."""
    model, layers = classifier.model, layers_of(classifier.model)
    head_mask = torch.ones(len(layers), layers[0].heads, requires_grad=True)
    neuron_mask = torch.ones(len(layers), layers[0].ffn_in.out_features, requires_grad=True)
    head_grads, neuron_grads = [], []
    with masked(model, head_mask, neuron_mask):
        for batch in tqdm(list(batches(classifier.tokenizer, texts, classifier.max_length, GRAD_BATCH)),
                          desc="prune: gradients", unit="batch", **progress_options(), leave=False):
            gh, gn = torch.autograd.grad(self_predicted_loss(model(**batch).logits, classifier.task),
                                         [head_mask, neuron_mask])
            head_grads.append(gh)
            neuron_grads.append(gn)
    return torch.stack(head_grads), torch.stack(neuron_grads)


def search(head_importance: torch.Tensor, neuron_importance: torch.Tensor, head_cost: float,
           neuron_cost: float, budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0/1 masks [L, H], [L, F] keeping the most importance within `budget` weights."""
    layers = head_importance.shape[0]
    head_mask, neuron_mask = torch.zeros_like(head_importance), torch.zeros_like(neuron_importance)
    head_mask[torch.arange(layers), head_importance.argmax(1)] = 1
    neuron_mask[torch.arange(layers), neuron_importance.argmax(1)] = 1
    budget -= layers * (head_cost + neuron_cost)

    rest_heads = head_importance.masked_fill(head_mask.bool(), -1).flatten()
    rest_neurons = neuron_importance.masked_fill(neuron_mask.bool(), -1).flatten()
    head_value, head_order = rest_heads.sort(descending=True)
    neuron_value, neuron_order = rest_neurons.sort(descending=True)
    n_free_heads, n_free_neurons = int((rest_heads >= 0).sum()), int((rest_neurons >= 0).sum())
    head_total = torch.cat([torch.zeros(1), head_value[:n_free_heads].double().cumsum(0)])
    neuron_total = torch.cat([torch.zeros(1), neuron_value[:n_free_neurons].double().cumsum(0)])

    best, choice = -1.0, (0, 0)
    for n_heads in range(n_free_heads + 1):
        left = budget - n_heads * head_cost
        if left < 0:
            break
        n_neurons = min(int(left // neuron_cost), n_free_neurons)
        total = float(head_total[n_heads] + neuron_total[n_neurons])
        if total > best:
            best, choice = total, (n_heads, n_neurons)
    head_mask.view(-1)[head_order[:choice[0]]] = 1
    neuron_mask.view(-1)[neuron_order[:choice[1]]] = 1
    return head_mask, neuron_mask


def rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """One layer: keep as many units, but choose the pruned set whose summed gradient
    vectors (grads: [batches, units]) have the smallest norm."""
    n_pruned = int((mask == 0).sum())
    if n_pruned == 0:
        return mask
    vectors = grads.T  # [units, batches]
    order = vectors.pow(2).sum(1).argsort().tolist()  # least important first
    pruned = order[:n_pruned]
    for candidate in order[n_pruned:]:
        pruned.append(candidate)
        members = vectors[pruned]
        without_each = members.sum(0, keepdim=True) - members  # the set's sum minus each member
        pruned.pop(int(without_each.pow(2).sum(1).argmin()))
    new = torch.ones_like(mask)
    new[pruned] = 0
    return new


@torch.no_grad()
def layer_inputs(model: PreTrainedModel, modules: list[nn.Module], batch: dict, cls_only: bool = False) -> list[torch.Tensor]:
    """Each module's first input on the batch's real tokens (or on position 0 only), [tokens, in].
    Inside `masked`, the mask hooks run first, so these are the masked inputs."""
    seen: list[torch.Tensor] = [None] * len(modules)

    def grab(k: int):
        def hook(_m, args):
            seen[k] = args[0]
        return hook

    handles = [m.register_forward_pre_hook(grab(k)) for k, m in enumerate(modules)]
    try:
        model(**batch)
    finally:
        for h in handles:
            h.remove()
    keep = batch["attention_mask"].bool()
    return [x[:, 0] if cls_only else x[keep] for x in seen]


def solve(ata: torch.Tensor, atb: torch.Tensor) -> torch.Tensor | None:
    """argmin ‖A·s − b‖² + λ‖s − 1‖², raising λ tenfold until every scale is within the
    limit: a ridge toward 1 (the unpruned value) tames a layer with few units left."""
    eye = torch.eye(len(ata), dtype=ata.dtype)
    ridge = RIDGE * ata.diagonal().mean()
    for _ in range(5):
        scales = torch.linalg.solve(ata + ridge * eye, atb + ridge)
        if torch.isfinite(scales).all() and scales.abs().max() <= SCALE_LIMIT:
            return scales
        ridge *= 10
    return None


@torch.no_grad()
def rescale(classifier: Classifier, head_mask: torch.Tensor, neuron_mask: torch.Tensor, texts: list[TextInput]) -> int:
    """Least-squares scales for the kept units, layer by layer, written into the masks.
    The original is the model without the mask hooks; the pruned model is the same with
    them. Returns how many sublayers were rescaled."""
    model = classifier.model
    data = list(batches(classifier.tokenizer, texts, classifier.max_length))
    layers = layers_of(model)
    done = 0
    for i, b in enumerate(layers):
        last = i == len(layers) - 1
        # Attention: the first layer sees identical inputs, so it is left alone (as the authors do).
        kept = head_mask[i].nonzero().flatten()
        if i > 0:
            ata, atb = torch.zeros(len(kept), len(kept), dtype=torch.float64), torch.zeros(len(kept), dtype=torch.float64)
            w = b.attention_out.weight.double().T.reshape(b.heads, b.head_size, -1)[kept]  # [k, d, H]
            for batch in data:
                x_t, ctx_t = layer_inputs(model, [b.module, b.attention_out], batch)
                target = b.attention_out(ctx_t).double() + x_t.double()
                with masked(model, head_mask, neuron_mask):
                    x_s, ctx_s = layer_inputs(model, [b.module, b.attention_out], batch)
                per_head = ctx_s.double().view(-1, b.heads, b.head_size)[:, kept]  # [N, k, d]
                a = torch.einsum("nkd,kdh->nhk", per_head, w).reshape(-1, len(kept))
                rest = (target - b.attention_out.bias.double() - x_s.double()).reshape(-1)
                ata += a.T @ a
                atb += a.T @ rest
            scales = solve(ata, atb)
            if scales is None:
                break
            head_mask[i, kept] = scales.float()
            done += 1
        # Feed-forward: for the last layer only position 0 feeds the classifier.
        kept = neuron_mask[i].nonzero().flatten()
        w2 = b.ffn_out.weight.double()[:, kept]  # [H, k]
        ata, atb = torch.zeros(len(kept), len(kept), dtype=torch.float64), torch.zeros(len(kept), dtype=torch.float64)
        for batch in data:
            res_t, act_t = layer_inputs(model, [b.ffn_in, b.ffn_out], batch, cls_only=last)
            target = b.ffn_out(act_t).double() + res_t.double()
            with masked(model, head_mask, neuron_mask):
                res_s, act_s = layer_inputs(model, [b.ffn_in, b.ffn_out], batch, cls_only=last)
            act = act_s.double()[:, kept]
            rest = target - b.ffn_out.bias.double() - res_s.double()
            ata += (w2.T @ w2) * (act.T @ act)
            atb += ((rest @ w2) * act).sum(0)
        scales = solve(ata, atb)
        if scales is None:
            break
        neuron_mask[i, kept] = scales.float()
        done += 1
    return done


@torch.no_grad()
def remove_units(model: PreTrainedModel, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> None:
    """Fold the mask values into the output projections, then cut the zeroed units out."""
    names = {id(m): n for n, m in model.named_modules()}
    hidden = model.config.hidden_size
    for i, b in enumerate(layers_of(model)):
        assert head_mask[i].shape == (b.heads,) and neuron_mask[i].shape == (b.ffn_in.out_features,), \
            f"prune: layer {i} has {b.heads} heads and {b.ffn_in.out_features} neurons, " \
            f"the masks {len(head_mask[i])} and {len(neuron_mask[i])}"
        b.attention_out.weight.mul_(head_mask[i].repeat_interleave(b.head_size)[None, :])
        b.ffn_out.weight.mul_(neuron_mask[i][None, :])
        kept = neuron_mask[i].nonzero().flatten()
        replace_module(model, names[id(b.ffn_in)], prune_linear_layer(b.ffn_in, kept, dim=0))
        replace_module(model, names[id(b.ffn_out)], prune_linear_layer(b.ffn_out, kept, dim=1))
    prune_heads(model, {i: (head_mask[i] == 0).nonzero().flatten().tolist() for i in range(len(head_mask))})
    # The kept units, and only they, must be left, each Linear cut on the side that indexes them.
    for i, b in enumerate(layers_of(model)):
        width, neurons = int((head_mask[i] != 0).sum()) * b.head_size, int((neuron_mask[i] != 0).sum())
        shapes = {"query": (width, hidden), "key": (width, hidden), "value": (width, hidden),
                  "attention_out": (hidden, width), "ffn_in": (neurons, hidden), "ffn_out": (hidden, neurons)}
        for part, shape in shapes.items():
            got = tuple(getattr(b, part).weight.shape)
            assert got == shape, f"prune: layer {i}'s {part} is {got} after removal, expected {shape}"


def compress(classifier: Classifier, ratio: float, calibration: list[TextInput] | None = None) -> dict:
    check_supported(classifier.model.config, "prune")
    texts = sample(calibration, SAMPLE, "prune")
    layers = layers_of(classifier.model)
    if any(b.heads != layers[0].heads or b.ffn_in.out_features != layers[0].ffn_in.out_features for b in layers):
        raise InputError("prune needs a model whose layers are unpruned and alike (same heads and FFN width)")
    hidden = layers[0].query.in_features
    head_cost, neuron_cost = 4 * hidden * layers[0].head_size, 2 * hidden
    total = len(layers) * (layers[0].heads * head_cost + layers[0].ffn_in.out_features * neuron_cost)

    head_grads, neuron_grads = mask_gradients(classifier, texts)
    head_mask, neuron_mask = search(head_grads.pow(2).sum(0), neuron_grads.pow(2).sum(0),
                                    head_cost, neuron_cost, ratio * total)
    for i in range(len(layers)):
        head_mask[i] = rearrange(head_mask[i], head_grads[:, i])
        neuron_mask[i] = rearrange(neuron_mask[i], neuron_grads[:, i])
    rescaled = rescale(classifier, head_mask, neuron_mask, texts)
    remove_units(classifier.model, head_mask, neuron_mask)
    kept = float(((head_mask != 0).sum() * head_cost + (neuron_mask != 0).sum() * neuron_cost) / total)
    return {"ratio": ratio, "kept": round(kept, 4), "calibration_texts": len(texts), "rescaled_sublayers": rescaled,
            "heads": [int(n) for n in (head_mask != 0).sum(1)], "neurons": [int(n) for n in (neuron_mask != 0).sum(1)]}
