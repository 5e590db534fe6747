"""load → compress (a `+`-joined pipeline of methods) → export, and the default set."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from compressor import default_model
from compressor.calibration import sample
from compressor.checkpoint import Classifier, load_classifier, parameter_count
from compressor.data import parity_inputs, read_calibration
from compressor.export import write_variant
from compressor.inputs import DEFAULT, check_compress, check_out
from compressor.progress import step
from compressor.recipe import (
    METHODS,
    Recipe,
    check_recipe,
    parse_method,
    pipeline_name,
    quantizer,
)
from variant.cascade import CASCADE_FILE, CascadeSpec
from variant.manifest import Manifest
from variant.tokenization import TextInput

QUANTIZE_SAMPLE = 256  # calibration texts that fix a calibrated quantizer's activation ranges (int8-static)

# `compressor build-default`: the embedded model plus the recipes the benchmarks recommend
# (docs/benchmarks.md), each within 1.5 points of it on SST-2 dev. Every one answers a text
# the same whatever shares its run: the int8 variants take fixed activation ranges from
# the shipped calibration text, where dynamic int8 would scale each batch its own way.
DEFAULT_RECIPES = (
    Recipe("original"),
    Recipe("int8", quantize="int8-static"),  # the cheap, safe default
    Recipe("prune75-int8", "prune", 0.75, "int8-static"),  # the fastest within 1 point
    # The smallest within 1.5 points, and no slower than the original at batch 32: GPTQ's
    # 4-bit blocks computed in float (answers still with the batch), the token table in 2
    # bits but for the rows of the tokens the calibration text uses most.
    Recipe("prune75-int4", "prune", 0.75, "int4-emb2-hot1024-b64-gptq-acc1"),
)
# Calibration texts a default recipe is built from, the first of the shipped sample, where
# fewer than all of it: enough for pruning's gradients to hold within a point, few enough
# that `make demo` builds the set in about a minute and a quarter on two cores.
DEFAULT_CALIBRATION_TEXTS = {"prune75-int8": 128, "prune75-int4": 128}
# int8 answers; inputs it is unsure of (top-1 under 0.9) go to the original.
DEFAULT_CASCADES = {"int8-cascade": CascadeSpec(fast="int8", reference="original", threshold=0.9)}


def apply_methods(classifier: Classifier, recipe: Recipe, calibration: list[TextInput] | None = None) -> tuple[Classifier, dict]:
    """A compressed copy of `classifier` (the original is untouched) and the settings that made it."""
    steps = check_recipe(recipe)
    if not steps:
        return classifier, {}
    compressed = Classifier(copy.deepcopy(classifier.model), classifier.tokenizer,
                            classifier.base_model, classifier.max_length)
    start = time.perf_counter()
    settings: dict = {}
    for name, ratio in steps:
        method = METHODS[name]
        options = {keyword: getattr(recipe, field) for keyword, field in method.recipe_options.items()}
        settings[name] = method.implementation()(compressed, recipe.ratio if ratio is None else ratio, calibration,
                                                 **options)
    settings["compress_seconds"] = round(time.perf_counter() - start, 1)
    return compressed, settings


def export(original: Classifier, compressed: Classifier, settings: dict, recipe: Recipe, out: Path,
           calibration: list[TextInput] | None = None) -> Manifest:
    sentences = parity_inputs(calibration)
    method = pipeline_name(parse_method(recipe.method), recipe.quantize)
    calibrated = recipe.quantize is not None and quantizer(recipe.quantize).calibrated(recipe.quantize)
    texts = sample(calibration, QUANTIZE_SAMPLE, f"--quantize {recipe.quantize}") if calibrated else None
    return write_variant(compressed, recipe.name, out, method, settings, parameter_count(original.model),
                         recipe.quantize, sentences, texts)


def build(classifier: Classifier, recipe: Recipe, out: Path, calibration: list[TextInput] | None = None) -> Manifest:
    """Compress a copy of `classifier` by `recipe` and write it as a variant under `out`."""
    compressed, settings = apply_methods(classifier, recipe, calibration)
    return export(classifier, compressed, settings, recipe, out, calibration)


def compress(model: str, recipe: Recipe, out: Path, calibration: list[TextInput] | None = None,
             max_length: int | None = None) -> Manifest:
    check_compress(model, recipe, out, calibration)  # fail on bad input before the slow load
    return build(load_classifier(model, max_length), recipe, out, calibration)


def build_default(out: Path) -> list[Manifest]:
    """The default variants, calibrated on the shipped SST-2 sample, then cascades.json
    (written last and renamed into place, so its presence means the set is complete)."""
    check_out(out)
    classifier = load_classifier(DEFAULT)
    calibration = read_calibration(default_model.CALIBRATION_FILE)
    manifests = []
    for recipe in DEFAULT_RECIPES:
        with step(recipe.name, "building"):
            manifests.append(build(classifier, recipe, out, calibration[:DEFAULT_CALIBRATION_TEXTS.get(recipe.name)]))
    partial = out / f".{CASCADE_FILE}"
    specs = {name: spec.model_dump() for name, spec in DEFAULT_CASCADES.items()}
    partial.write_text(json.dumps(specs, indent=2) + "\n", encoding="utf-8")
    partial.replace(out / CASCADE_FILE)
    return manifests
