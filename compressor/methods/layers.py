"""Where each architecture keeps its transformer layers and the parts the methods touch.

The one place that knows BERT's (and RoBERTa's, MiniLM's, ELECTRA's, XLM-R's)
`encoder.layer[i].attention.self.query` from DistilBERT's `transformer.layer[i].attention.q_lin`
and DeBERTa-v2's `encoder.layer[i].attention.self.query_proj`, which module produces layer
0's input, and which Linear of the head reads the last layer's output. A method that works
layer by layer asks here, so supporting another architecture is one more branch in this
module. Which methods a family refuses, and why, is compressor.families' table.

ModernBERT has no `Layer` here: its `model.layers[i]` fuse query, key and value into one
`attn.Wqkv` and the feed-forward's two GLU halves into one `mlp.Wi`, and normalise each
sublayer's input (pre-norm), so the per-layer methods refuse it; the methods that replace
Linears (`attn.Wqkv`, `attn.Wo`, `mlp.Wi`, `mlp.Wo`) need no layout.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import prune_linear_layer

from compressor.errors import InputError


@dataclass
class Layer:
    """The parts of one transformer layer, looked up afresh after every surgery."""
    query: nn.Linear  # query, key and value read the layer input (the attention residual)
    key: nn.Linear
    value: nn.Linear
    attention_out: nn.Linear  # reads the per-head context, heads side by side
    ffn_in: nn.Linear  # reads the FFN residual
    ffn_out: nn.Linear  # reads the neuron activations
    output_norm: nn.LayerNorm  # produces the layer's output
    heads: int
    head_size: int
    # The whole layer: its first positional input is the layer input. Not always the query's
    # only input: DeBERTa-v2 runs its query and key over the relative-position embeddings too.
    module: nn.Module


def encoder_of(model: PreTrainedModel) -> nn.Module:
    """The module holding the `layer` ModuleList."""
    base = model.base_model
    for name in ("encoder", "transformer"):  # BERT, RoBERTa, MiniLM, ELECTRA, XLM-R, DeBERTa-v2; DistilBERT
        if hasattr(getattr(base, name, None), "layer"):
            return getattr(base, name)
    raise InputError(f"slimserve does not know the layer layout of model type {model.config.model_type!r} "
                     "(it knows BERT, RoBERTa, DistilBERT, ELECTRA, XLM-RoBERTa and DeBERTa-v2)")


def parts_of(layer: nn.Module) -> Layer:
    if hasattr(layer, "ffn"):  # DistilBERT
        a = layer.attention
        return Layer(a.q_lin, a.k_lin, a.v_lin, a.out_lin, layer.ffn.lin1, layer.ffn.lin2, layer.output_layer_norm,
                     a.n_heads, a.attention_head_size, layer)
    a = layer.attention.self
    if hasattr(a, "query_proj"):  # DeBERTa-v2's disentangled attention
        q, k, v, heads = a.query_proj, a.key_proj, a.value_proj, a.num_attention_heads
    else:
        q, k, v, heads = a.query, a.key, a.value, a.num_attention_heads
    return Layer(q, k, v, layer.attention.output.dense, layer.intermediate.dense, layer.output.dense,
                 layer.output.LayerNorm, heads, a.attention_head_size, layer)


def layers_of(model: PreTrainedModel) -> list[Layer]:
    return [parts_of(layer) for layer in encoder_of(model).layer]


def embedding_norm(model: PreTrainedModel) -> nn.LayerNorm | nn.Linear:
    """What produces layer 0's input, channel by channel: the embeddings' LayerNorm, or
    ELECTRA's projection after it where its embeddings are narrower than its layers."""
    base = model.base_model
    projection = getattr(base, "embeddings_project", None)
    return projection if isinstance(projection, nn.Linear) else base.embeddings.LayerNorm


def head_input(model: PreTrainedModel) -> nn.Linear:
    """The head's first Linear: it reads position 0 of the last layer's output."""
    base = model.base_model
    if getattr(base, "pooler", None) is not None:  # BERT: pooler.dense
        return base.pooler.dense
    if isinstance(getattr(getattr(model, "pooler", None), "dense", None), nn.Linear):  # DeBERTa-v2's ContextPooler
        return model.pooler.dense
    if isinstance(getattr(model, "pre_classifier", None), nn.Linear):  # DistilBERT
        return model.pre_classifier
    if isinstance(getattr(getattr(model, "classifier", None), "dense", None), nn.Linear):  # RoBERTa, XLM-R, ELECTRA
        return model.classifier.dense
    raise InputError(f"slimserve does not know the classification head of {type(model).__name__}")


def input_readers(layer: Layer) -> list[nn.Linear]:
    """The Linears that read the layer's input and nothing else: its query, key and value.
    DeBERTa-v2 with `share_att_key` runs its query and key projections over the
    relative-position embeddings too; those get copies of their own first (as in a
    checkpoint without sharing), so what is fitted to the layer input leaves the
    position scores as they were."""
    attention = getattr(layer.module.attention, "self", None)
    if getattr(attention, "share_att_key", False) and getattr(attention, "relative_attention", False):
        if "c2p" in attention.pos_att_type:
            attention.pos_key_proj = copy.deepcopy(attention.key_proj)
        if "p2c" in attention.pos_att_type:
            attention.pos_query_proj = copy.deepcopy(attention.query_proj)
        attention.share_att_key = False
    return [layer.query, layer.key, layer.value]


def prune_heads(model: PreTrainedModel, heads: dict[int, list[int]]) -> None:
    """Remove the listed attention heads ({layer: [head, ...]}) from the weights.
    transformers does this for every family here but DeBERTa-v2."""
    if model.config.model_type != "deberta-v2":
        model.prune_heads(heads)
        return
    for i, layer in enumerate(encoder_of(model).layer):
        if heads.get(i):
            prune_disentangled_heads(layer.attention, heads[i])


def prune_disentangled_heads(attention: nn.Module, heads: list[int]) -> None:
    """DeBERTa-v2's attention without `heads`. Its own position projections, if any, lose
    the same heads; shared ones are the query and key projections themselves."""
    inner = attention.self
    size = inner.attention_head_size
    kept = [h for h in range(inner.num_attention_heads) if h not in heads]
    index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept])
    for name in ("query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"):
        if isinstance(getattr(inner, name, None), nn.Linear):
            setattr(inner, name, prune_linear_layer(getattr(inner, name), index, dim=0))
    attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
    inner.num_attention_heads = len(kept)
    inner.all_head_size = len(kept) * size
