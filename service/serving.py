"""What the service serves right now: the loaded variants, one batcher for each that
serves, and the cascades over them. Built whole, swapped whole on reload.

Whether a name serves is answered here and nowhere else: a variant serves while its
`reason` is None (repository.py), and then has a batcher; a cascade serves while
`cascade_problem` finds nothing wrong. `lookup` turns a name into what a request runs on,
once per request, or raises NotFound / NotReady.

Reload builds a new Serving beside the old one (loading and warming every variant in a
worker thread), swaps it in, and only then stops the old batchers, which first finish
what they hold. A request that found the old set completes on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.batching import Batcher, Limits
from service.errors import NotFound, NotReady
from service.metrics import Metrics
from service.repository import Variant, load_repository
from service.settings import Settings
from variant import cascade
from variant.backends import BackendFactory
from variant.cascade import CascadeSpec
from variant.folder import Opened, missing_files
from variant.heads import Task
from variant.manifest import NONE, ORIGINAL
from variant.tokenization import pad_id, warmup_shapes

log = logging.getLogger("slimserve.serving")


@dataclass(frozen=True)
class ReadyVariant:
    """A variant that serves, as a request found it: it keeps its batcher even if the
    folder watcher retires the variant meanwhile (a stopped batcher still runs what it is
    handed), so a request in flight completes."""

    opened: Opened
    batcher: Batcher

    @property
    def name(self) -> str:
        return self.opened.name

    @property
    def labels(self) -> list[str]:
        return self.opened.labels

    @property
    def task(self) -> Task:
        return self.opened.task


@dataclass(frozen=True)
class Cascade:
    """A cascade that can answer: its spec and the two serving variants it runs on."""

    name: str
    spec: CascadeSpec
    fast: ReadyVariant
    reference: ReadyVariant

    @property
    def labels(self) -> list[str]:
        return self.fast.labels

    @property
    def task(self) -> Task:
        return self.fast.task


@dataclass
class Serving:
    variants: dict[str, Variant]
    batchers: dict[str, Batcher] = field(default_factory=dict)  # one per variant that serves
    cascades: dict[str, CascadeSpec] = field(default_factory=dict)  # every one declared, serving or not

    def knows(self, name: str) -> bool:
        return name in self.variants or name in self.cascades

    def ready_variants(self) -> list[str]:
        """The variants that serve, in folder order."""
        return [name for name, variant in self.variants.items() if variant.ready]

    def ready_cascades(self) -> list[str]:
        return [name for name in self.cascades if self.cascade_problem(name) is None]

    def cascade_problem(self, name: str) -> str | None:
        """Why cascade `name` cannot answer now, or None when it can: it has a variant's
        name, a variant it needs does not serve, or the two cannot form a cascade."""
        if name in self.variants:
            return f"cascade {name!r} has the name of a variant"
        spec = self.cascades[name]
        missing = [m for m in (spec.fast, spec.reference) if m not in self.ready_variants()]
        if missing:
            return f"cascade {name!r} needs {', '.join(missing)}, which is not ready"
        return cascade.unfit(name, spec, {m: self.variants[m].opened.head for m in (spec.fast, spec.reference)})

    def variant(self, name: str) -> ReadyVariant:
        variant = self.variants.get(name)
        if variant is None:
            raise NotFound(f"model {name!r} not found")
        if not variant.ready:
            raise NotReady(f"model {name!r} is not ready: {variant.reason}")
        return ReadyVariant(variant.opened, self.batchers[name])

    def lookup(self, name: str) -> ReadyVariant | Cascade:
        """What a request for `name` runs on. A variant's name means the variant, even
        where a (refused) cascade has the same name."""
        if name in self.variants or name not in self.cascades:
            return self.variant(name)
        problem = self.cascade_problem(name)
        if problem is not None:
            raise NotReady(problem)
        spec = self.cascades[name]
        return Cascade(name, spec, self.variant(spec.fast), self.variant(spec.reference))

    def reference(self, configured: str | None) -> str | None:
        """The variant the others are compared with (/v1/compare's default, shadow sampling).

        The one home of the rule: SLIMSERVE_REFERENCE when set; else the serving variant
        that is an uncompressed export (method "none"), since agreement with the original
        is what a compressed variant is judged by; among several, `original`, else the
        alphabetically first. None when there is no such variant."""
        if configured is not None:
            return configured
        plain = sorted(n for n in self.ready_variants() if self.variants[n].opened.manifest.method == NONE)
        if ORIGINAL in plain:
            return ORIGINAL
        return plain[0] if plain else None

    async def retire_vanished(self) -> list[str]:
        """Stop serving the variants whose files were deleted from disk, so the models
        folder stays the truth; they stay listed as failed with the reason, and what they
        had queued still completes (the session is in memory)."""
        gone = [name for name in self.ready_variants() if missing_files(self.variants[name].folder)]
        for name in gone:
            variant = self.variants[name]
            variant.reason = (f"{', '.join(missing_files(variant.folder))} removed from disk while serving; "
                              "restore the folder and POST /admin/reload")
            log.warning("variant %s stops serving: %s", name, variant.reason)
            await asyncio.shield(self.batchers.pop(name).stop())  # shutdown cancels the watcher, not the drain
        return gone

    async def stop(self) -> None:
        for name, outcome in zip(self.batchers, await asyncio.gather(
                *(b.stop() for b in self.batchers.values()), return_exceptions=True)):
            if isinstance(outcome, Exception):
                log.warning("stopping %s's batcher: %s", name, outcome)


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_batch_size, settings.max_batch_tokens, settings.max_queue_delay_ms / 1000,
                  settings.max_queue, settings.batching)


def warmup_of(settings: Settings):
    """A variant's max_length → the shapes it runs once before it serves, or None: no warm-up."""
    def shapes(max_length: int) -> list[tuple[int, int]]:
        return warmup_shapes(max_length, settings.max_batch_size, settings.max_batch_tokens)
    return shapes if settings.warmup else None


def read_cascades(declared: Mapping[str, CascadeSpec], models: Path) -> dict[str, CascadeSpec]:
    """The cascades of the settings and of models/cascades.json (the file wins on a clash);
    a bad file is logged and ignored, so the variants still serve."""
    specs = dict(declared)
    try:
        specs.update(cascade.read_cascade_file(models))
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("ignoring %s: %s", models / cascade.CASCADE_FILE, str(exc).splitlines()[0])
    return specs


async def build_serving(settings: Settings, metrics: Metrics, backend_of: BackendFactory) -> Serving:
    variants = await run_in_threadpool(load_repository, settings.models, backend_of, warmup_of(settings))
    serving = Serving(variants, cascades=read_cascades(settings.cascades, settings.models))
    limits = limits_of(settings)
    for name in serving.ready_variants():
        opened = variants[name].opened
        batcher = Batcher(name, opened.backend, pad_id(opened.tokenizer), opened.manifest.max_length,
                          limits, metrics)
        batcher.start()
        serving.batchers[name] = batcher
    for name in serving.cascades:
        problem = serving.cascade_problem(name)
        if problem is not None:
            log.warning("%s", problem)
    return serving
