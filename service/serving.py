"""What the service serves right now: the loaded variants, one batcher for each that
serves, and the cascades over them. Built whole, swapped whole on reload.

Whether a name serves is answered here and nowhere else: a variant serves while its
`reason` is None (repository.py), and then has a batcher; a cascade serves while
`cascade.problem` finds nothing wrong. `lookup` turns a name into what a request runs on,
once per request, or raises NotFound / NotReady.

Reload builds a new Serving beside the old one (loading and warming every variant in a
worker thread), swaps it in, and only then stops the old batchers, which first finish
what they hold. A request that found the old set completes on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from service import cascade
from service.backend import BackendFactory
from service.batching import Batcher, Limits, buckets
from service.cascade import Cascade, CascadeSpec
from service.errors import NotFound, NotReady
from service.manifest import Task
from service.metrics import Metrics
from service.repository import Variant, load_repository, missing_files
from service.settings import Settings
from service.tokenization import pad_id

log = logging.getLogger("slimserve.serving")

# The manifest method of a plain, uncompressed export (the compressor's `recipe.NONE`;
# the service never imports the compressor). Quantized-only variants say `int8` etc.
UNCOMPRESSED = "none"
ORIGINAL = "original"  # what `compressor build-default` calls its plain export


@dataclass(frozen=True)
class ReadyVariant:
    """A variant that serves, as a request found it: it keeps its batcher even if the
    folder watcher retires the variant meanwhile (a stopped batcher still runs what it is
    handed), so a request in flight completes."""

    variant: Variant
    batcher: Batcher

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def labels(self) -> list[str]:
        return self.variant.manifest.labels

    @property
    def task(self) -> Task:
        return self.variant.manifest.task


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
        """Why cascade `name` cannot answer now, or None when it can."""
        return cascade.problem(name, self.cascades[name], self.variants, self.ready_variants())

    def variant(self, name: str) -> ReadyVariant:
        variant = self.variants.get(name)
        if variant is None:
            raise NotFound(f"model {name!r} not found")
        if not variant.ready:
            raise NotReady(f"model {name!r} is not ready: {variant.reason}")
        return ReadyVariant(variant, self.batchers[name])

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
        plain = sorted(n for n in self.ready_variants() if self.variants[n].manifest.method == UNCOMPRESSED)
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


def warmup_shapes(settings: Settings):
    """(batch, length) for every length bucket: one row, and as many as a batch may hold."""
    def shapes(max_length: int) -> list[tuple[int, int]]:
        grid = []
        for length in buckets(max_length):
            largest = max(1, min(settings.max_batch_size, settings.max_batch_tokens // length))
            grid += sorted({(1, length), (largest, length)})
        return grid
    return shapes if settings.warmup else None


async def build_serving(settings: Settings, metrics: Metrics, backend_of: BackendFactory) -> Serving:
    variants = await run_in_threadpool(load_repository, settings.models, backend_of, warmup_shapes(settings))
    serving = Serving(variants, cascades=cascade.read_cascades(settings.cascades, settings.models))
    limits = limits_of(settings)
    for name in serving.ready_variants():
        variant = variants[name]
        batcher = Batcher(name, variant.backend, pad_id(variant.tokenizer), variant.manifest.max_length,
                          limits, metrics)
        batcher.start()
        serving.batchers[name] = batcher
    for name in serving.cascades:
        problem = serving.cascade_problem(name)
        if problem is not None:
            log.warning("%s", problem)
    return serving
