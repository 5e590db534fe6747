"""Open a variant folder: check its files, read its manifest and tokenizer, open its graph
on a backend, check the graph scores the manifest's labels, and warm it up.

A folder holds `variant.json`, `model.onnx` and `tokenizer.json`, every one inside the
folder that holds the variant (a symlink out of it, to another user's files say, is
refused). Both halves open variants here: the service for each folder it serves, the
compressor to score and time what it built.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from variant.backends import Backend, BackendFactory, open_backend
from variant.heads import Signature, Task
from variant.manifest import (
    MANIFEST_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    VARIANT_FILES,
    Manifest,
    Runtime,
    files_digest,
    read_manifest,
)
from variant.tokenization import load_tokenizer


@dataclass
class Opened:
    """A variant ready to run: what its folder says and the backend its graph runs on."""

    name: str
    folder: Path
    manifest: Manifest
    tokenizer: Tokenizer = field(repr=False)
    backend: Backend = field(repr=False)
    digest: str  # sha256 of its model and tokenizer files (files_digest): which build answered
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    memory_bytes: int = 0  # resident memory the process grew by while loading and warming it

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def head(self) -> Signature:
        return self.manifest.task, tuple(self.manifest.labels)


def resident_bytes() -> int:
    """Current resident set size of this process (Linux); 0 where /proc is absent."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def missing_files(folder: Path) -> list[str]:
    return [f for f in VARIANT_FILES if not (folder / f).is_file()]


def check_inside(folder: Path) -> None:
    """Every file a variant loads must lie in the folder that holds the variant. ONNX
    Runtime itself refuses external weight files outside the model's folder."""
    root = folder.parent.resolve()
    for name in VARIANT_FILES:
        if not (folder / name).resolve().is_relative_to(root):
            raise PermissionError(f"{name} resolves outside the models folder")


def dummy_batch(batch: int, length: int) -> dict[str, np.ndarray]:
    ones = np.ones((batch, length), dtype=np.int64)
    return {"input_ids": ones, "attention_mask": ones, "token_type_ids": np.zeros_like(ones)}


def warm_up(backend: Backend, shapes: Sequence[tuple[int, int]]) -> None:
    for batch, length in shapes:
        backend.run(dummy_batch(batch, length))


def check_labels(backend: Backend, manifest: Manifest) -> None:
    """The graph must score exactly the manifest's labels, or every answer would be misnamed."""
    width = backend.run(dummy_batch(1, 2)).shape[-1]
    if width != len(manifest.labels):
        raise ValueError(f"{MANIFEST_FILE} lists {len(manifest.labels)} labels but {ONNX_FILE} scores {width}")


Warmup = Callable[[int], Sequence[tuple[int, int]]]  # a variant's max_length → the (batch, length) shapes to run


def open_folder(folder: Path, backend_of: BackendFactory, warmup: Warmup | None = None) -> Opened:
    """The variant in `folder`, its graph opened through `backend_of` and run once at each
    shape `warmup` gives. Raises on any fault of the folder, naming it in one line."""
    before, start = resident_bytes(), time.perf_counter()
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
    warm_up(backend, warmup(manifest.max_length) if warmup else ())
    done = time.perf_counter()
    return Opened(folder.name, folder, manifest, tokenizer, backend, digest, loaded - start, done - loaded,
                  max(0, resident_bytes() - before))


def open_on(folder: Path, runtime: Runtime | None = None, threads: int = 1, parallel: int = 1) -> Opened:
    """The variant in `folder` on `runtime` (default: the one its manifest records) with
    `threads` threads per run and up to `parallel` runs at once: how the compressor opens
    what it measures. Raises RuntimeError where the runtime falls back to another (no
    bf16 on this CPU, say)."""
    def backend_of(path: Path, recorded: Runtime) -> Backend:
        chosen = runtime or recorded
        return open_backend(path, Runtime(backend=chosen.backend, precision=chosen.precision, threads=threads),
                            parallel)

    opened = open_folder(folder, backend_of)
    if runtime is not None and opened.backend.runtime.label() != runtime.label():
        raise RuntimeError(f"runs as {opened.backend.runtime.label()} here, not {runtime.label()}")
    return opened
