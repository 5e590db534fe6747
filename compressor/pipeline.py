"""load → compress (a `+`-joined pipeline of methods) → export, and the default set."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compressor.calibration import missing as calibration_missing
from compressor.calibration import sample
from compressor.checkpoint import Classifier, load_classifier, parameter_count
from compressor.data import PARITY_SENTENCES
from compressor.errors import InputError
from compressor.export import write_variant
from compressor.methods import autoencoder, aware, drop_layers, embedding, fisher, kronecker, prune, svd, tucker
from compressor.methods.int4 import is_int4
from compressor.methods.int4 import parse as parse_int4
from compressor.methods.quantize import QUANTIZATIONS
from compressor.methods.svd import ALLOCATIONS
from service.manifest import Manifest
from service.repository import VARIANT_NAME

Method = Callable[..., dict]
METHODS: dict[str, Method] = {
    "svd": svd.compress,
    "svd-aware": aware.compress_whitened,
    "asvd": aware.compress_scaled,
    "fwsvd": fisher.compress,
    "ae": functools.partial(autoencoder.compress, shared=False, linear=False),
    "ae-shared": functools.partial(autoencoder.compress, shared=True, linear=False),
    "ae-linear": functools.partial(autoencoder.compress, shared=False, linear=True),
    "ae-linear-shared": functools.partial(autoencoder.compress, shared=True, linear=True),
    "kronecker": kronecker.compress,
    "tucker": tucker.compress,
    "prune": prune.compress,
    "drop-layers": drop_layers.compress,
    "embed-ae": embedding.compress,
}
NONE = "none"  # plain export
NEEDS_CALIBRATION = {"svd-aware", "asvd", "fwsvd", "prune", "drop-layers"}  # embed-ae only uses it when given
ALLOCATABLE = {"svd", "svd-aware", "asvd", "fwsvd"}  # take --allocation uniform|sensitivity
# Methods that replace the encoder Linears: one per pipeline, after prune.
FACTORIZERS = ALLOCATABLE | {"ae", "ae-shared", "ae-linear", "ae-linear-shared", "kronecker", "tucker"}
STATIC_SAMPLE = 256  # calibration texts that fix int8-static's activation ranges


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str = NONE
    ratio: float = 1.0
    quantize: str | None = None
    allocation: str = "uniform"
    layer_repair: str = drop_layers.DEFAULT_REPAIR
    drop_layers: tuple[int, ...] | None = None  # drop-layers: these layers instead of a budget


# `compressor build-default`: the embedded model, plain and compressed.
DEFAULT_RECIPES = (
    Recipe("original"),
    Recipe("svd-50", "svd", 0.5),
    Recipe("int8", quantize="int8"),
    Recipe("svd-50-int8", "svd", 0.5, "int8"),
)


def parse_method(method: str) -> list[tuple[str, float | None]]:
    """`svd`, `prune+svd-aware`, or with a budget per step: `prune@0.7+embed-ae@0.5`.
    A step without `@R` takes `--ratio`."""
    if method == NONE:
        return []
    steps = []
    for part in method.split("+"):
        name, _, ratio = part.partition("@")
        if name not in METHODS:
            known = ", ".join([NONE, *METHODS])
            raise InputError(f"unknown method {name!r}; choose from {known}, or join several with '+'")
        try:
            value = float(ratio) if ratio else None
        except ValueError:
            raise InputError(f"step {part!r}: the budget after '@' must be a number in (0, 1]") from None
        if value is not None and not 0 < value <= 1:
            raise InputError(f"step {part!r}: the budget after '@' must be in (0, 1]")
        steps.append((name, value))
    names = [name for name, _ in steps]
    if len(set(names)) < len(names):
        raise InputError(f"method {method!r} repeats a step; each method may appear once")
    factorizers = [n for n in names if n in FACTORIZERS]
    if len(factorizers) > 1:
        raise InputError(f"method {method!r} joins {' and '.join(factorizers)}; "
                         "use one method that replaces the encoder Linears per pipeline")
    if "prune" in names and factorizers and names.index(factorizers[0]) < names.index("prune"):
        raise InputError(f"method {method!r}: prune must come before {factorizers[0]} (it needs whole layers)")
    if "drop-layers" in names:
        # Layers go first: prune would spend its budget on them, and the repair refits dense Q, K, V.
        before = [n for n in names[:names.index("drop-layers")] if n == "prune" or n in FACTORIZERS]
        if before:
            raise InputError(f"method {method!r}: drop-layers must come before {before[0]}")
    return steps


def pipeline_name(steps: list[tuple[str, float | None]], quantize: str | None) -> str:
    """What the manifest and metrics call a recipe: `svd+int8`, `prune@0.7+embed-ae@0.5`, `int8`, `none`."""
    parts = [name if ratio is None else f"{name}@{ratio:g}" for name, ratio in steps]
    return "+".join(parts + ([quantize] if quantize else [])) or NONE


def check_recipe(recipe: Recipe) -> list[tuple[str, float | None]]:
    if not VARIANT_NAME.fullmatch(recipe.name):
        raise InputError(f"variant name {recipe.name!r} must be letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    if not 0 < recipe.ratio <= 1:
        raise InputError(f"--ratio must be in (0, 1], got {recipe.ratio}")
    if is_int4(recipe.quantize):
        parse_int4(recipe.quantize)  # a bad option fails here, before the slow load
    elif recipe.quantize is not None and recipe.quantize not in QUANTIZATIONS:
        raise InputError(f"unknown --quantize {recipe.quantize!r}; choose from {', '.join(QUANTIZATIONS)}"
                         " (int4 takes options, e.g. int4-emb4)")
    if recipe.allocation not in ALLOCATIONS:
        raise InputError(f"unknown --allocation {recipe.allocation!r}; choose from {', '.join(ALLOCATIONS)}")
    steps = parse_method(recipe.method)
    if recipe.allocation != "uniform" and not any(name in ALLOCATABLE for name, _ in steps):
        raise InputError(f"--allocation {recipe.allocation} applies to {', '.join(sorted(ALLOCATABLE))}")
    dropping = [ratio for name, ratio in steps if name == "drop-layers"]
    if (recipe.drop_layers is not None or recipe.layer_repair != drop_layers.DEFAULT_REPAIR) and not dropping:
        raise InputError("--drop-layers and --layer-repair apply to method drop-layers")
    if recipe.drop_layers is not None and dropping[0] is not None:
        raise InputError("drop-layers takes a budget (drop-layers@R) or --drop-layers, not both")
    if recipe.layer_repair not in drop_layers.REPAIRS:
        raise InputError(f"unknown --layer-repair {recipe.layer_repair!r}; choose from {', '.join(drop_layers.REPAIRS)}")
    return steps


def apply_methods(classifier: Classifier, recipe: Recipe, calibration: list[str] | None = None) -> tuple[Classifier, dict]:
    """A compressed copy of `classifier` (the original is untouched) and the settings that made it."""
    steps = check_recipe(recipe)
    if not steps:
        return classifier, {}
    compressed = Classifier(copy.deepcopy(classifier.model), classifier.tokenizer,
                            classifier.base_model, classifier.max_length)
    start = time.perf_counter()
    settings: dict = {}
    for name, ratio in steps:
        options = {"allocation": recipe.allocation} if name in ALLOCATABLE else {}
        if name == "drop-layers":
            options = {"layers": recipe.drop_layers, "repair_with": recipe.layer_repair}
        settings[name] = METHODS[name](compressed, recipe.ratio if ratio is None else ratio, calibration, **options)
    settings["compress_seconds"] = round(time.perf_counter() - start, 1)
    return compressed, settings


def export(original: Classifier, compressed: Classifier, settings: dict, recipe: Recipe, out: Path,
           calibration: list[str] | None = None) -> Manifest:
    sentences = PARITY_SENTENCES + (calibration or [])[:32]
    method = pipeline_name(parse_method(recipe.method), recipe.quantize)
    static_texts = sample(calibration, STATIC_SAMPLE, "--quantize int8-static") if recipe.quantize == "int8-static" else None
    return write_variant(compressed, recipe.name, out, method, settings, parameter_count(original.model),
                         recipe.quantize, sentences, static_texts)


def build(classifier: Classifier, recipe: Recipe, out: Path, calibration: list[str] | None = None) -> Manifest:
    """Compress a copy of `classifier` by `recipe` and write it as a variant under `out`."""
    compressed, settings = apply_methods(classifier, recipe, calibration)
    return export(classifier, compressed, settings, recipe, out, calibration)


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")


def compress(model: str, recipe: Recipe, out: Path, calibration: list[str] | None = None,
             max_length: int | None = None) -> Manifest:
    steps = check_recipe(recipe)  # fail on bad flags before the slow load
    check_out(out)
    needy = [name for name, _ in steps if name in NEEDS_CALIBRATION]
    if needy and not calibration:
        raise calibration_missing(needy[0])
    for option, wanted in (("--allocation sensitivity", recipe.allocation == "sensitivity"),
                           ("--quantize int8-static", recipe.quantize == "int8-static")):
        if wanted and not calibration:
            raise calibration_missing(option)
    return build(load_classifier(model, max_length), recipe, out, calibration)


def build_default(out: Path) -> list[Manifest]:
    check_out(out)
    classifier = load_classifier("default")
    return [build(classifier, recipe, out) for recipe in DEFAULT_RECIPES]
