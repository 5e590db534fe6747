"""The user's model (a folder, or a Hub name: compressor.hub) and output folder, checked without torch.

Importing torch and transformers takes seconds, so the command line runs these checks
(and the recipe's, compressor.recipe) before it imports them: a wrong path fails at once.
The library functions run the same checks for callers that skip the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

from compressor.errors import InputError
from compressor.hub import TOKENIZER_FILES, Checkpoint, resolve
from compressor.recipe import Recipe, check_calibration, check_recipe

DEFAULT = "default"  # the embedded model, named instead of a checkpoint folder


def check_checkpoint(spec: str) -> Checkpoint | None:
    """`default` (None), or a folder or Hub model (compressor.hub) whose config.json declares
    a sequence classifier: where it is, and what the manifest calls it."""
    if spec == DEFAULT:
        return None
    checkpoint = resolve(spec)
    if not checkpoint.folder.exists():
        raise InputError(f"{spec} does not exist; give a checkpoint folder, an ORG/NAME model on the Hugging Face "
                         "Hub, or 'default'")
    if not checkpoint.folder.is_dir():
        raise InputError(f"{spec} is a file; give the checkpoint's folder (the one holding config.json)")
    config_file = checkpoint.folder / "config.json"
    if not config_file.is_file():
        raise InputError(f"{spec} is not a checkpoint folder (no config.json); use a local folder or 'default'")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{config_file} is not valid JSON: {exc}") from exc
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        # Loading it anyway would bolt a random head onto the encoder and export nonsense.
        found = ", ".join(architectures) or "none"
        raise InputError(f"{spec} is not a sequence classifier (architectures: {found})")
    if not any((checkpoint.folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{spec} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                         "save it beside the model with tokenizer.save_pretrained")
    return checkpoint


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")


def check_compress(model: str, recipe: Recipe, out: Path, calibration: list | None) -> None:
    """Everything `compressor compress` can refuse before loading the model."""
    check_recipe(recipe)
    check_out(out)
    check_calibration(recipe, calibration)
    check_checkpoint(model)
