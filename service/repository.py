"""The model repository: find the variants under the models folder and load each.

A variant is a sub-folder holding `variant.json`, `model.onnx` and `tokenizer.json`.
Folders whose name starts with "." are the compressor's work in progress and are skipped.
A variant that fails to load is kept with state "failed" and the reason, so the others
still serve and `GET /v1/models` says what went wrong.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer

from service.backend import OrtBackend
from service.manifest import MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE, Manifest, read_manifest
from service.tokenization import load_tokenizer

log = logging.getLogger("slimserve.repository")

VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # use fullmatch


@dataclass
class Variant:
    name: str
    folder: Path
    state: Literal["ready", "failed"]
    reason: str | None = None
    manifest: Manifest | None = None
    tokenizer: Tokenizer | None = field(default=None, repr=False)
    backend: OrtBackend | None = field(default=None, repr=False)
    load_seconds: float = 0.0
    memory_bytes: int = 0  # resident memory the process grew by while loading it


def resident_bytes() -> int:
    """Current resident set size of this process (Linux); 0 where /proc is absent."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def discover(models: Path) -> list[Path]:
    if not models.is_dir():
        raise FileNotFoundError(f"models folder {models} does not exist")
    return sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_variant(folder: Path, intra_op: int, limiter: threading.Semaphore | None) -> Variant:
    name = folder.name
    if not VARIANT_NAME.fullmatch(name):
        return Variant(name, folder, "failed", f"invalid variant name {name!r}")
    before, start = resident_bytes(), time.perf_counter()
    try:
        for required in (MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE):
            if not (folder / required).is_file():
                raise FileNotFoundError(f"missing {required}")
        manifest = read_manifest(folder)
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE, manifest.max_length)
        backend = OrtBackend(folder / ONNX_FILE, intra_op, limiter)
    except Exception as exc:  # any fault of one variant must not stop the others
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("variant %s failed to load: %s", name, reason)
        return Variant(name, folder, "failed", reason)
    seconds = time.perf_counter() - start
    log.info("variant %s loaded in %.2fs (method %s)", name, seconds, manifest.method)
    return Variant(name, folder, "ready", None, manifest, tokenizer, backend, seconds, max(0, resident_bytes() - before))


def load_repository(models: Path, intra_op: int, limiter: threading.Semaphore | None = None) -> dict[str, Variant]:
    return {folder.name: load_variant(folder, intra_op, limiter) for folder in discover(models)}
