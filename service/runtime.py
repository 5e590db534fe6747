"""What the service serves right now: the loaded variants, one batcher each, and the
cascades over them. Built whole, swapped whole on reload.

Reload builds a new Runtime beside the old one (loading and warming every variant in a
worker thread), swaps it in, and only then stops the old batchers, which first finish
what they hold. A request that found the old runtime completes on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.batching import Batcher, Limits, buckets
from service.cascade import CASCADE_FILE, CascadeSpec, read_cascade_file
from service.metrics import Metrics
from service.repository import Variant, load_repository, missing_files
from service.settings import Settings
from service.tokenization import pad_id

log = logging.getLogger("slimserve.runtime")

# The manifest method of a plain, uncompressed export (the compressor's `recipe.NONE`;
# the service never imports the compressor). Quantized-only variants say `int8` etc.
UNCOMPRESSED = "none"
ORIGINAL = "original"  # what `compressor build-default` calls its plain export


@dataclass
class Runtime:
    variants: dict[str, Variant]
    batchers: dict[str, Batcher] = field(default_factory=dict)
    cascades: dict[str, CascadeSpec] = field(default_factory=dict)
    cascade_errors: dict[str, str] = field(default_factory=dict)  # name → why it is not served

    def knows(self, name: str) -> bool:
        return name in self.variants or name in self.cascades or name in self.cascade_errors

    def cascade_problem(self, name: str) -> str | None:
        """Why cascade `name` cannot answer now (a variant it needs was retired), or None."""
        spec = self.cascades[name]
        missing = [m for m in (spec.fast, spec.reference) if m not in self.batchers]
        return f"cascade {name!r} needs {', '.join(missing)}, which is not ready" if missing else None

    def reference(self, configured: str | None) -> str | None:
        """The variant the others are compared with (/v1/compare's default, shadow sampling).

        The one home of the rule: SLIMSERVE_REFERENCE when set; else the serving variant
        that is an uncompressed export (method "none"), since agreement with the original
        is what a compressed variant is judged by; among several, `original`, else the
        alphabetically first. None when there is no such variant."""
        if configured is not None:
            return configured
        plain = sorted(n for n in self.batchers
                       if (m := self.variants[n].manifest) is not None and m.method == UNCOMPRESSED)
        if ORIGINAL in plain:
            return ORIGINAL
        return plain[0] if plain else None

    async def retire_vanished(self) -> list[str]:
        """Stop serving the variants whose files were deleted from disk, so the models
        folder stays the truth; they stay listed as failed with the reason, and what they
        had queued still completes (the session is in memory)."""
        gone = [name for name in self.batchers if missing_files(self.variants[name].folder)]
        for name in gone:
            variant = self.variants[name]
            variant.state = "failed"
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


def read_cascades(settings: Settings) -> dict[str, CascadeSpec]:
    """Cascades from the settings and from models/cascades.json (the file wins on a clash)."""
    specs = dict(settings.cascades)
    try:
        specs.update(read_cascade_file(settings.models))
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("ignoring %s: %s", settings.models / CASCADE_FILE, str(exc).splitlines()[0])
    return specs


def check_cascades(specs: dict[str, CascadeSpec], variants: dict[str, Variant]) -> tuple[dict, dict[str, str]]:
    served, errors = {}, {}
    for name, spec in specs.items():
        if name in variants:
            errors[name] = f"cascade {name!r} has the name of a variant"
            continue
        missing = [m for m in (spec.fast, spec.reference) if m not in variants or not variants[m].ready]
        if missing:
            errors[name] = f"cascade {name!r} needs {', '.join(missing)}, which is not ready"
            continue
        if variants[spec.fast].manifest.labels != variants[spec.reference].manifest.labels:
            errors[name] = f"cascade {name!r}: {spec.fast} and {spec.reference} have different labels"
            continue
        served[name] = spec
    for name, reason in errors.items():
        log.warning("%s", reason)
    return served, errors


async def build_runtime(settings: Settings, metrics: Metrics, limiter: threading.Semaphore) -> Runtime:
    variants = await run_in_threadpool(load_repository, settings.models, settings.session_threads(), limiter,
                                       settings.execution_provider, warmup_shapes(settings))
    runtime = Runtime(variants)
    limits = limits_of(settings)
    for name, variant in variants.items():
        if variant.ready:
            batcher = Batcher(name, variant.backend, pad_id(variant.tokenizer), variant.manifest.max_length,
                              limits, metrics)
            batcher.start()
            runtime.batchers[name] = batcher
    runtime.cascades, runtime.cascade_errors = check_cascades(read_cascades(settings), variants)
    return runtime
