"""Where each architecture keeps its transformer layers and the parts the methods touch.

The one place that knows BERT's (and RoBERTa's, MiniLM's) `encoder.layer[i].attention.self.query`
from DistilBERT's `transformer.layer[i].attention.q_lin`, and which Linear of the head reads
the last layer's output. A method that works layer by layer asks here, so supporting
another architecture is one more branch in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

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


def encoder_of(model: PreTrainedModel) -> nn.Module:
    """The module holding the `layer` ModuleList."""
    base = model.base_model
    for name in ("encoder", "transformer"):  # BERT, RoBERTa, MiniLM; DistilBERT
        if hasattr(getattr(base, name, None), "layer"):
            return getattr(base, name)
    raise InputError(f"slimserve does not know the layer layout of model type {model.config.model_type!r} "
                     "(it knows BERT, RoBERTa and DistilBERT)")


def layers_of(model: PreTrainedModel) -> list[Layer]:
    encoder = encoder_of(model)
    if encoder is getattr(model.base_model, "encoder", None):
        return [Layer(l.attention.self.query, l.attention.self.key, l.attention.self.value, l.attention.output.dense,
                      l.intermediate.dense, l.output.dense, l.output.LayerNorm,
                      l.attention.self.num_attention_heads, l.attention.self.attention_head_size)
                for l in encoder.layer]
    return [Layer(l.attention.q_lin, l.attention.k_lin, l.attention.v_lin, l.attention.out_lin, l.ffn.lin1, l.ffn.lin2,
                  l.output_layer_norm, l.attention.n_heads, l.attention.attention_head_size)
            for l in encoder.layer]


def embedding_norm(model: PreTrainedModel) -> nn.LayerNorm:
    """The LayerNorm that produces layer 0's input."""
    return model.base_model.embeddings.LayerNorm


def head_input(model: PreTrainedModel) -> nn.Linear:
    """The head's first Linear: it reads position 0 of the last layer's output."""
    base = model.base_model
    if getattr(base, "pooler", None) is not None:  # BERT: pooler.dense
        return base.pooler.dense
    if isinstance(getattr(model, "pre_classifier", None), nn.Linear):  # DistilBERT
        return model.pre_classifier
    if isinstance(getattr(getattr(model, "classifier", None), "dense", None), nn.Linear):  # RoBERTa
        return model.classifier.dense
    raise InputError(f"slimserve does not know the classification head of {type(model).__name__}")
