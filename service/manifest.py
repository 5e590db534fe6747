"""`variant.json`: the manifest of one exported variant (DESIGN.md §3).

Written by the compressor, read by the service and shown by the API. The compressor
imports this module; the service never imports the compressor, so serving needs no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_FILE = "variant.json"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


class Evaluation(BaseModel):
    """What `compressor evaluate` measured last; free-form beyond the headline figures."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    examples: int
    accuracy: float | None = None
    agreement: float | None = None
    reference: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    base_model: str
    task: str = "text-classification"
    labels: list[str] = Field(min_length=1)
    max_length: int = Field(gt=0)
    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    parameters: int = Field(ge=0)
    parameters_original: int = Field(ge=0)
    onnx_bytes: int = Field(ge=0)
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    parity: float | None = None
    evaluation: Evaluation | None = None


def read_manifest(folder: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ValueError(f"{MANIFEST_FILE} is invalid at {where}: {first['msg']}") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Replace `variant.json` atomically so a reader never sees half a file."""
    text = json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".variant-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a service may run as another user
        os.replace(tmp, folder / MANIFEST_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
