"""Export a (compressed) classifier as a variant folder: model.onnx, tokenizer files,
variant.json — checked for parity and written atomically.

Exporter: torch.onnx's TorchScript tracer (`dynamo=False`). It traces whatever modules
the compressed model holds (factorized Linears, pruned heads, decoders) with no
per-architecture export config to keep in sync, as Optimum's exporter would need, and its
graph is the classic BERT pattern that ONNX Runtime's attention and LayerNorm fusions
recognise. The dynamo exporter would add onnxscript and gained nothing for these models.

Parity is measured the way the service will run the variant: the saved tokenizer.json
through variant/tokenization.py and the ONNX graph on ONNX Runtime, against the
PyTorch model on real sentences, padded in one batch so the attention mask is exercised.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from compressor.checkpoint import Classifier, parameter_count
from compressor.errors import ParityError
from compressor.recipe import NONE, quantizer
from variant import measure
from variant.backends import runtimes
from variant.backends.ort import OrtBackend
from variant.folder import open_on
from variant.manifest import (
    ONNX_FILE,
    TOKENIZER_FILE,
    Manifest,
    Runtime,
    files_digest,
    write_manifest,
)
from variant.runtimes import BACKENDS, DEFAULT_BACKEND
from variant.tokenization import TextInput, encode, load_tokenizer

OPSET = 17  # first opset with LayerNormalization as one op
PARITY_LIMIT = 1e-4  # max |Δlogit| an fp32 export may show against the PyTorch model it was exported from


class LogitsOnly(nn.Module):
    """Positional inputs in a fixed order and a bare logits tensor out, for the tracer."""

    def __init__(self, model: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors))).logits


def input_names(classifier: Classifier) -> list[str]:
    # The tokenizer knows which inputs the architecture takes (no token_type_ids for
    # RoBERTa or DistilBERT); attention_mask always goes second. DeBERTa-v3's tokenizer
    # hands out token_type_ids to a model without type embeddings (type_vocab_size 0):
    # the traced graph has no such input, so a quantizer must not be fed one.
    names = ["input_ids", "attention_mask"]
    typed = "token_type_ids" in classifier.tokenizer.model_input_names \
        and getattr(classifier.model.config, "type_vocab_size", 1) > 0
    return names + (["token_type_ids"] if typed else [])


def export_onnx(classifier: Classifier, path: Path, sentences: list[TextInput]) -> None:
    names = input_names(classifier)
    sample = classifier.tokenizer(sentences[:2], padding=True, return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        # The exporter restores the wrapper's training flag afterwards, and that flag
        # propagates to the model: a fresh wrapper in train mode would switch dropout on.
        torch.onnx.export(
            LogitsOnly(classifier.model, names).eval(), tuple(sample[n] for n in names), str(path),
            input_names=names, output_names=["logits"], dynamic_axes={**dynamic, "logits": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )


def save_tokenizer(classifier: Classifier, folder: Path) -> None:
    """The checkpoint's tokenizer files, with its padding written into tokenizer.json so
    the service pads exactly as the checkpoint does."""
    tok = classifier.tokenizer
    tok.save_pretrained(str(folder))
    fast = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    fast.no_truncation()
    fast.enable_padding(pad_id=tok.pad_token_id, pad_token=tok.pad_token)
    fast.save(str(folder / TOKENIZER_FILE))


@torch.no_grad()
def measure_parity(classifier: Classifier, folder: Path, sentences: list[TextInput]) -> float:
    expected = classifier.model(**classifier.tokenizer(
        sentences, padding=True, truncation=True, max_length=classifier.max_length, return_tensors="pt")).logits
    batch = encode(load_tokenizer(folder / TOKENIZER_FILE, classifier.max_length), list(sentences))
    actual = OrtBackend(folder / ONNX_FILE).run(batch.arrays)
    return float(np.abs(actual - expected.numpy()).max())


def parity_limit(quantize: str | None) -> float | None:
    """The parity an export must keep to be written. Every fp32 export, compressed or not,
    fused or not, computes what its PyTorch model computes, so it differs by float
    rounding only; a quantized one rounds its weights on purpose and is held to none."""
    return PARITY_LIMIT if quantize is None or quantizer(quantize).exact else None


def parity_against(method: str) -> str:
    return "PyTorch" if method == NONE else "the compressed PyTorch model"


def parity_summary(method: str, quantize: str | None, parity: float) -> str:
    """How `compressor compress` states parity: the max |logit difference| between the ONNX
    graph, run as the service runs it, and the PyTorch model it was exported from. An fp32
    graph differs by float rounding only. A quantized graph rounds its weights on purpose
    and drifts by orders of magnitude more, which is expected and no failure; only
    `compressor evaluate` can say what that costs in accuracy."""
    limit = parity_limit(quantize)
    if limit is None:
        return (f"logit drift {parity:.1e} vs fp32 ({quantize} rounding, expected; "
                "accuracy is what `compressor evaluate` measures)")
    return f"parity {parity:.1e} (max logit difference, fp32 export vs {parity_against(method)}, limit {limit:.0e})"


def replace_folder(source: Path, target: Path) -> None:
    """Move a finished folder into place; an existing variant of that name is swapped out."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(old / target.name)
        source.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        source.rename(target)


def calibration_feeds(folder: Path, classifier: Classifier, texts: list[TextInput], input_names: tuple[str, ...],
                      batch: int = 8) -> list[dict[str, np.ndarray]]:
    """Batches for a quantizer that needs calibration, tokenized exactly as the service will."""
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE, classifier.max_length)
    feeds = []
    for start in range(0, len(texts), batch):
        arrays = encode(tokenizer, texts[start:start + batch]).arrays
        feeds.append({name: arrays[name] for name in input_names})
    return feeds


def preferred_runtime(quantize: str | None) -> Runtime:
    """The runtime a variant is recorded to run on: its quantizer's backend at the last
    (fastest) precision this machine computes, where that backend is installed; else
    ONNX Runtime, the manifest saying why."""
    wanted = quantizer(quantize).runtime if quantize is not None else None
    if wanted is None:
        return Runtime()
    here = [r for r in runtimes() if r.backend == wanted]
    if not here:
        return Runtime(note=f"{wanted} is not installed where this variant was built (pip install "
                            f"'slimserve[{BACKENDS[wanted].extra}]'); it runs on {DEFAULT_BACKEND}")
    return Runtime(backend=wanted, precision=here[-1].precision)


def record_batch_variation(folder: Path, manifest: Manifest, inputs: list[TextInput]) -> None:
    """Measure how far answers move with what shares their run on the runtime the variant
    is recorded for. Where that runtime cannot open the graph, or moves answers more than
    variant.measure allows, record ONNX Runtime instead, the manifest saying why: a
    served answer must not depend on what else is in the batch."""
    try:
        variation = measure.batch_variation(open_on(folder, manifest.runtime), inputs)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot run this graph: ONNX Runtime runs it
        variation, why = None, f"{manifest.runtime.label()} cannot run it: {str(exc).splitlines()[0][:160]}"
    else:
        why = f"{manifest.runtime.label()} moved answers by {variation:.2g} with what shared their run"
    if manifest.runtime.backend != DEFAULT_BACKEND and (variation is None or variation > measure.INVARIANCE_LIMIT):
        fallback = measure.batch_variation(open_on(folder, Runtime()), inputs)
        if variation is None or fallback <= measure.INVARIANCE_LIMIT:
            manifest.runtime, variation = Runtime(note=f"{why}; recorded for {DEFAULT_BACKEND}"), fallback
    manifest.batch_variation = float(f"{variation:.3g}")
    manifest.batch_invariant = variation <= measure.INVARIANCE_LIMIT
    write_manifest(folder, manifest)


def write_variant(classifier: Classifier, name: str, out: Path, method: str, settings: dict,
                  parameters_original: int, quantize: str | None, sentences: list[TextInput],
                  calibration: list[TextInput] | None = None) -> Manifest:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{name}.tmp-*"):  # left by a run of this name that was killed
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out))  # hidden: the service skips it
    work.chmod(0o755)  # mkdtemp makes it private; a service may run as another user
    try:
        save_tokenizer(classifier, work)
        export_onnx(classifier, work / ONNX_FILE, sentences)
        if quantize is not None:
            row = quantizer(quantize)
            fp32 = work / "model.fp32.onnx"
            (work / ONNX_FILE).rename(fp32)
            feeds = calibration_feeds(work, classifier, calibration or sentences, tuple(input_names(classifier))) \
                if row.calibrated(quantize) else None
            settings = {**settings, **row.implementation()(fp32, work / ONNX_FILE, quantize, feeds)}
            fp32.unlink()
        parity = measure_parity(classifier, work, sentences)
        limit = parity_limit(quantize)
        if limit is not None and parity > limit:
            raise ParityError(f"ONNX export differs from {parity_against(method)} by {parity:.2e} (limit {limit:.0e})")
        manifest = Manifest(
            name=name, base_model=classifier.base_model, labels=classifier.labels, task=classifier.task,
            max_length=classifier.max_length, method=method, settings=settings,
            parameters=parameter_count(classifier.model), parameters_original=parameters_original,
            onnx_bytes=(work / ONNX_FILE).stat().st_size, parity=parity, digest=files_digest(work),
            runtime=preferred_runtime(quantize),
        )
        write_manifest(work, manifest)
        record_batch_variation(work, manifest, sentences)
        replace_folder(work, out / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest
