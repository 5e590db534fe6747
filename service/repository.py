"""The model repository: find the variants under the models folder and open each.

A variant is a sub-folder that variant/folder.py opens. Folders whose name starts with
"." are the compressor's work in progress and are skipped. A variant that fails to load
is kept with the reason, so the others still serve and `GET /v1/models` says what went
wrong; the reason a client reads names no server path (the full text is logged). A
variant is ready only after it has run once at every warm-up shape, so its first
requests pay no first-run costs.

Each Variant is its own readiness record, the one place that says whether it serves
(serving.py starts and retires it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from service.batching import Batcher
from service.errors import redact
from variant.backends import BackendFactory
from variant.folder import Opened, Warmup, open_folder
from variant.heads import Task
from variant.manifest import VARIANT_NAME

log = logging.getLogger("slimserve.repository")


@dataclass
class Variant:
    """A folder of the models folder and whether it serves. It serves while `reason` is
    None: `opened` is what it runs and `batcher` its queue owner (serving.py starts one for
    every variant that loaded, before anyone can look it up). Otherwise `reason` says why
    not: it failed to load, or was retired. A retired variant keeps what it had, so a
    request that looked it up before completes on it (a stopped batcher still runs what
    it is handed)."""

    name: str
    folder: Path
    reason: str | None = None
    opened: Opened | None = field(default=None, repr=False)
    batcher: Batcher | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.reason is None

    @property
    def labels(self) -> list[str]:
        return self.opened.labels

    @property
    def task(self) -> Task:
        return self.opened.task

    @property
    def state(self) -> Literal["ready", "failed"]:
        return "ready" if self.ready else "failed"


def discover(models: Path) -> list[Path]:
    if not models.is_dir():
        raise FileNotFoundError(f"models folder {models} does not exist")
    return sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_variant(folder: Path, backend_of: BackendFactory, warmup: Warmup | None = None) -> Variant:
    """Open one variant, its model through `backend_of`, warmed up at the shapes `warmup` gives."""
    if not VARIANT_NAME.fullmatch(folder.name):  # the folder's name is the model's name in every route
        return Variant(folder.name, folder, f"invalid variant name {folder.name!r}")
    try:
        opened = open_folder(folder, backend_of, warmup)
    except Exception as exc:  # noqa: BLE001 — any fault of one variant must not stop the others
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("variant %s failed to load: %s", folder.name, reason)
        return Variant(folder.name, folder, redact(reason, folder.parent))
    log.info("variant %s loaded in %.2fs, warmed up in %.2fs (method %s, %s at %s on %s)", opened.name,
             opened.load_seconds, opened.warmup_seconds, opened.manifest.method, opened.backend.runtime.backend,
             opened.backend.runtime.precision, opened.backend.provider)
    return Variant(folder.name, folder, None, opened)


def load_repository(models: Path, backend_of: BackendFactory, warmup: Warmup | None = None) -> dict[str, Variant]:
    return {folder.name: load_variant(folder, backend_of, warmup) for folder in discover(models)}
