"""The model repository: find the variants under the models folder and load each.

A variant is a sub-folder holding `variant.json`, `model.onnx` and `tokenizer.json`.
Folders whose name starts with "." are the compressor's work in progress and are skipped.
A variant that fails to load is kept with the reason, so the others still serve and
`GET /v1/models` says what went wrong; the reason a client reads names no server path
(the full text is logged). A variant is ready only after it has run once at every
warm-up shape, so its first requests pay no first-run costs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from service.backend import Backend, BackendFactory
from service.errors import redact
from service.manifest import (
    MANIFEST_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    VARIANT_NAME,
    Manifest,
    files_digest,
    read_manifest,
)
from service.tokenization import load_tokenizer

log = logging.getLogger("slimserve.repository")



@dataclass
class Variant:
    name: str
    folder: Path
    # Why it does not serve: it failed to load, or was retired (serving.py). None: it
    # serves; the one record of whether it does.
    reason: str | None = None
    manifest: Manifest | None = None
    tokenizer: Tokenizer | None = field(default=None, repr=False)
    backend: Backend | None = field(default=None, repr=False)
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    memory_bytes: int = 0  # resident memory the process grew by while loading and warming it
    digest: str = ""  # sha256 of its model and tokenizer files (files_digest): which build answered

    @property
    def ready(self) -> bool:
        return self.reason is None

    @property
    def state(self) -> Literal["ready", "failed"]:
        return "ready" if self.ready else "failed"


def resident_bytes() -> int:
    """Current resident set size of this process (Linux); 0 where /proc is absent."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


VARIANT_FILES = (MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE)


def missing_files(folder: Path) -> list[str]:
    return [f for f in VARIANT_FILES if not (folder / f).is_file()]


def check_inside(folder: Path) -> None:
    """Every file a variant loads must lie in the models folder: a symlink out of it (to
    another user's files, say) is refused. ONNX Runtime itself refuses external weight
    files outside the model's folder."""
    root = folder.parent.resolve()
    for name in VARIANT_FILES:
        if not (folder / name).resolve().is_relative_to(root):
            raise PermissionError(f"{name} resolves outside the models folder")


def discover(models: Path) -> list[Path]:
    if not models.is_dir():
        raise FileNotFoundError(f"models folder {models} does not exist")
    return sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))


def warm_up(backend: Backend, shapes: list[tuple[int, int]]) -> None:
    for batch, length in shapes:
        ones = np.ones((batch, length), dtype=np.int64)
        backend.run({"input_ids": ones, "attention_mask": ones, "token_type_ids": np.zeros_like(ones)})


def check_labels(backend: Backend, manifest: Manifest) -> None:
    """The graph must score exactly the manifest's labels, or every answer would be misnamed."""
    ones = np.ones((1, 2), dtype=np.int64)
    width = backend.run({"input_ids": ones, "attention_mask": ones, "token_type_ids": np.zeros_like(ones)}).shape[-1]
    if width != len(manifest.labels):
        raise ValueError(f"{MANIFEST_FILE} lists {len(manifest.labels)} labels but {ONNX_FILE} scores {width}")


def load_variant(folder: Path, backend_of: BackendFactory,
                 warmup: Callable[[int], list[tuple[int, int]]] | None = None) -> Variant:
    """Load one variant, its model through `backend_of`; `warmup` maps its max_length to
    the (batch, length) shapes to run."""
    name = folder.name
    if not VARIANT_NAME.fullmatch(name):
        return Variant(name, folder, f"invalid variant name {name!r}")
    before, start = resident_bytes(), time.perf_counter()
    try:
        missing = missing_files(folder)
        if missing:
            raise FileNotFoundError(f"missing {', '.join(missing)}")
        check_inside(folder)
        manifest = read_manifest(folder)
        digest = manifest.digest or files_digest(folder)  # older manifests did not record it
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE, manifest.max_length)
        backend = backend_of(folder / ONNX_FILE, manifest.runtime)
        check_labels(backend, manifest)
        loaded = time.perf_counter()
        warm_up(backend, warmup(manifest.max_length) if warmup else [])
    except Exception as exc:  # noqa: BLE001 — any fault of one variant must not stop the others
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("variant %s failed to load: %s", name, reason)
        return Variant(name, folder, redact(reason, folder.parent))
    done = time.perf_counter()
    log.info("variant %s loaded in %.2fs, warmed up in %.2fs (method %s, %s at %s on %s)", name, loaded - start,
             done - loaded, manifest.method, backend.runtime.backend, backend.runtime.precision, backend.provider)
    return Variant(name, folder, None, manifest, tokenizer, backend, loaded - start, done - loaded,
                   max(0, resident_bytes() - before), digest)


def load_repository(models: Path, backend_of: BackendFactory,
                    warmup: Callable[[int], list[tuple[int, int]]] | None = None) -> dict[str, Variant]:
    return {folder.name: load_variant(folder, backend_of, warmup) for folder in discover(models)}
