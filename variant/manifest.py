"""`variant.json`: the manifest of one exported variant (docs/contracts.md, a variant on disk).

Written by the compressor, read by the service and shown by the API.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from variant.heads import Task, task_of
from variant.runtimes import BACKENDS, DEFAULT_BACKEND

MANIFEST_FILE = "variant.json"
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # use fullmatch; also the served model name
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
DIGEST_FILES = (ONNX_FILE, TOKENIZER_FILE)  # the files that decide a variant's answers
VARIANT_FILES = (MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE)
# The method of a plain, uncompressed export; quantized-only variants say `int8` etc.
NONE = "none"
ORIGINAL = "original"  # what `compressor build-default` calls its plain export


def files_digest(folder: Path) -> str:
    """A variant's identity, `sha256:HEX`: the sha256 of one line `NAME SHA256` per file of
    DIGEST_FILES. variant.json is not among them: `compressor evaluate` rewrites it, and
    the answers stay the same."""
    lines = []
    for name in DIGEST_FILES:
        file_hash = hashlib.sha256()
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):  # model.onnx can be hundreds of MB
                file_hash.update(chunk)
        lines.append(f"{name} {file_hash.hexdigest()}\n")
    return f"sha256:{hashlib.sha256(''.join(lines).encode()).hexdigest()}"


def timestamp() -> str:
    """A manifest's timestamps: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Evaluation(BaseModel):
    """What `compressor evaluate` measured on one dataset; free-form beyond the headline
    figures (it also records `latency_ms`)."""

    model_config = ConfigDict(extra="allow")

    dataset: str  # the data file's name
    rows: int
    labelled: bool
    accuracy: float | None = None  # labelled data only
    pearson: float | None = None  # instead of accuracy for a regression head: correlation with the labels
    agreement: float | None = None  # with `reference`, on the same rows, as the task defines it
    mae: float | None = None  # regression: mean |score − reference score|
    reference: str | None = None
    date: str | None = None  # absent on an evaluation converted from the old single `evaluation`


BackendName = Literal[tuple(BACKENDS)]
Precision = Literal["f32", "bf16"]


class Runtime(BaseModel):
    """The backend, precision and threads per run a variant should run with. `compressor
    search` records the one it measured fastest, with what it measured (extra fields); the
    service honours it unless a setting overrides it (docs/serving.md, runtimes)."""

    model_config = ConfigDict(extra="allow")

    backend: BackendName = DEFAULT_BACKEND
    precision: Precision = "f32"
    # Threads one run computes on; the service runs as many side by side as its thread
    # budget holds. None: every thread of the budget, one run at a time.
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def precision_of_backend(self) -> Runtime:
        precisions = BACKENDS[self.backend].precisions
        if self.precision not in precisions:
            raise ValueError(f"{self.backend} runs at {' or '.join(precisions)}, not {self.precision}")
        return self

    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


DYNAMIC_INT8 = "int8"  # the compressor's `--quantize int8`, as its settings record it
OLD_TASK = "text-classification"  # what manifests said before heads had tasks


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    base_model: str
    task: Task = "single_label"
    labels: list[str] = Field(min_length=1)
    max_length: int = Field(gt=0)
    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    parameters: int = Field(ge=0)
    parameters_original: int = Field(ge=0)
    onnx_bytes: int = Field(ge=0)
    created: str = Field(default_factory=timestamp)
    parity: float | None = None
    digest: str | None = None  # files_digest at export; absent from manifests written before it was recorded
    # False: a text's answer depends on what else shares its run (dynamic int8's per-batch
    # activation scale, or a runtime whose kernels round differently by shape): measured at
    # export on the recorded runtime (`batch_variation`, the largest |Δ score|, against
    # variant.measure.INVARIANCE_LIMIT). Compare and shadow sampling report such a variant.
    batch_invariant: bool = True
    batch_variation: float | None = None
    runtime: Runtime = Field(default_factory=Runtime)
    # `compressor search`'s record: objective, bound, score and the trail of candidates.
    search: dict[str, Any] | None = None
    # By dataset key, `NAME@HASH` (compressor.evaluate.dataset_key): a new evaluation
    # replaces only the one on the same data.
    evaluations: dict[str, Evaluation] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def convert_old_task(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("task") == OLD_TASK:  # transformers' rule: one output is a regression
            data = {**data, "task": task_of(None, len(data.get("labels") or ()))}
        return data

    @model_validator(mode="before")
    @classmethod
    def dynamic_int8_depends_on_the_batch(cls, data: Any) -> Any:
        """Manifests written before `batch_invariant` was recorded: `--quantize int8` is the
        one quantizer whose answers depend on the batch."""
        if isinstance(data, dict) and "batch_invariant" not in data and \
                isinstance(data.get("settings"), dict) and data["settings"].get("quantize") == DYNAMIC_INT8:
            data = {**data, "batch_invariant": False}
        return data

    @model_validator(mode="before")
    @classmethod
    def convert_single_evaluation(cls, data: Any) -> Any:
        """Manifests written before evaluations were kept per dataset hold one `evaluation`
        (`examples`, and `accuracy` only when the data was labelled); it becomes the entry
        under its file name, without a hash or a date, which were not recorded."""
        if not isinstance(data, dict) or "evaluation" not in data:
            return data
        data = dict(data)
        old = data.pop("evaluation")
        if old is None:
            return data
        if not isinstance(old, dict):
            raise ValueError("evaluation must be an object")  # noqa: TRY004 - pydantic reports only ValueError
        entry = {k: v for k, v in old.items() if k != "examples"}
        entry.update(rows=old.get("examples"), labelled=old.get("accuracy") is not None)
        data["evaluations"] = {str(old.get("dataset")): entry, **(data.get("evaluations") or {})}
        return data


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
