"""The encoder families slimserve knows, and which compression methods each one refuses.

One table, `FAMILIES`, keyed by the checkpoint's `config.model_type`: the methods refuse
from it (`check_supported`), and docs/methods.md's families table is rendered from it
(`markdown_table`, which a test compares with the page). A method a family does not list
runs on it. Where a method cannot work on a layout, the refusal says why in one line;
layers.py is where the layouts themselves live.

A model type missing from the table is not refused here: methods that only replace
Linears run on it, and the per-layer ones stop in layers.py if they do not know its
layout. Imports neither torch nor transformers, like compressor.recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compressor.errors import InputError
from compressor.recipe import METHODS, NONE


@dataclass(frozen=True)
class Refusal:
    reason: str  # why the method cannot work on the layout: the error's parenthesis and the docs cell
    # A config field: refused only where a checkpoint sets it (non-zero); None: refused always.
    only_with: str | None = None

    def scope(self, family: str) -> str:
        return f"{family} with {self.only_with} set" if self.only_with else family


@dataclass(frozen=True)
class Family:
    name: str  # what messages and docs call it
    refusals: dict[str, Refusal] = field(default_factory=dict)  # method → why not


# ModernBERT: prune removes heads and neurons and rescales each sublayer against its
# post-norm residual sum; drop-layers folds its repairs into the inputs of the next
# layer's Q, K, V and of the head. Neither holds for its layers.
MODERNBERT_PRUNE = Refusal("fused query/key/value and GLU projections in pre-norm layers")
MODERNBERT_DROP = Refusal("its layers are pre-norm; the least-squares repairs fold into post-norm layers' inputs")
# DeBERTa-v2 xlarge and xxlarge add a convolution to whichever layer runs first.
DEBERTA_CONV_DROP = Refusal("the convolution after layer 0 would move to the next layer", only_with="conv_kernel_size")

FAMILIES: dict[str, Family] = {
    "bert": Family("BERT"),  # MiniLM too
    "distilbert": Family("DistilBERT"),
    "roberta": Family("RoBERTa"),
    "electra": Family("ELECTRA"),
    "xlm-roberta": Family("XLM-RoBERTa"),
    "deberta-v2": Family("DeBERTa-v2", {"drop-layers": DEBERTA_CONV_DROP}),  # DeBERTa-v3 checkpoints too
    "modernbert": Family("ModernBERT", {"prune": MODERNBERT_PRUNE, "drop-layers": MODERNBERT_DROP}),
}


def supported_by(method: str) -> list[str]:
    """The families `method` runs on, conditions included."""
    names = []
    for family in FAMILIES.values():
        refusal = family.refusals.get(method)
        if refusal is None:
            names.append(family.name)
        elif refusal.only_with:
            names.append(f"{family.name} without {refusal.only_with}")
    return names


def refusal_message(model_type: str, method: str, config: object) -> str | None:
    """The one-line error for `method` on a checkpoint of `model_type` whose config (an
    object with attributes, as transformers' configs are) is `config`; None where it runs."""
    family = FAMILIES.get(model_type)
    refusal = family.refusals.get(method) if family else None
    if refusal is None or (refusal.only_with and not getattr(config, refusal.only_with, None)):
        return None
    return (f"{method} does not support {refusal.scope(family.name)} ({refusal.reason}); "
            f"supported: {', '.join(supported_by(method))}")


def check_supported(config: object, method: str) -> None:
    """Refuse `method` on the checkpoint whose transformers config is `config`, in one line."""
    message = refusal_message(config.model_type, method, config)
    if message is not None:
        raise InputError(message)


def cell(family: Family, method: str) -> str:
    refusal = family.refusals.get(method)
    if refusal is None:
        return "✓"
    return f"refused with `{refusal.only_with}` set: {refusal.reason}" if refusal.only_with else f"refused: {refusal.reason}"


def markdown_table() -> str:
    """docs/methods.md's families table: a row per method (`none` is the plain export), a
    column per family."""
    header = ["method", *(f"{f.name} (`{t}`)" for t, f in FAMILIES.items())]
    rows = [header, ["---"] * len(header)]
    rows += [[f"`{m}`", *(cell(f, m) for f in FAMILIES.values())] for m in [NONE, *METHODS]]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"
